"""Post-training quantization of a task's model (torchao): the methods, the coverage report, the evaluation."""

import logging

# What importing torchao 0.18 logs on a machine without its CUDA kernels (transformers imports it whenever it is
# installed, quantization or not): one line per kernel library it cannot load, and torch's notice about its enums.
NOISE = {"torchao": "Failed to load ", "torch.utils._pytree": "is an Enum subclass and is now natively supported"}


class _DropNoise(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


def quiet_torchao_import() -> None:
    """Keeps those lines off the console; every other message of these loggers still shows."""
    for name, text in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(text))
