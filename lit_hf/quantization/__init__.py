"""Post-training quantization of a task's model (torchao): the methods, the coverage report, the evaluation."""
