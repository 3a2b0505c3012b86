"""Image classification: any AutoModelForImageClassification (ResNet, ViT, ConvNeXt), top-1/top-5 accuracy exact."""

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from transformers import AutoModelForImageClassification

from lit_hf.metrics import MetricStates
from lit_hf.models import DType, model_inputs
from lit_hf.options import HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.predictions import gather_by_index, log_dir
from lit_hf.tasks.base import Split, TransformersTask
from lit_hf.tasks.labels import configure_labels, in_data_order

TOP_K = 5  # the second accuracy reported, as ImageNet results are; only with more than 5 classes


class ImageClassificationTask(TransformersTask):
    """Classification of batches of `pixel_values` (batch, 3, height, width) and `labels` (the data's class ids).

    Logs `train/loss` every step; `val/loss`, `val/accuracy` (top-1) and, with more than 5 classes,
    `val/top5_accuracy` once per validation epoch (`test/...` for `test`), all exact over the whole set on any
    number of processes. `predict` writes `predict_results.txt` (index, label) and `predict_results.jsonl` (with
    every class's probability) to the log dir, in input order. The image processor is saved with the export.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForImageClassification.from_pretrained`.
        label_names: Class names in id order. Linked from the data module; None keeps the checkpoint's own.
        ignore_mismatched_sizes: Put a new, randomly initialised head on a checkpoint whose head has another size
            (e.g. ImageNet's 1000 classes for CIFAR-10's 10).
        lora: Train LoRA adapters (and the head) instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` and gradient checkpointing.
    """

    pipeline_tag = "image-classification"

    def __init__(
        self,
        model_name_or_path: ModelPath = "microsoft/resnet-50",
        hub: HubOptions = HubOptions(),
        dtype: DType | None = None,
        from_scratch: bool = False,
        label_names: list[str] | None = None,
        ignore_mismatched_sizes: bool = False,
        optim: OptimOptions = OptimOptions(),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed, quantization)
        config = self.load_config()
        order = configure_labels(config, label_names, False, ignore_mismatched_sizes)
        self.processor = self.load_image_processor()  # saved by the export
        self.model = self.load_model(  # PEFT has no image-classification type: the head is named to train with LoRA
            AutoModelForImageClassification,
            config,
            None,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            modules_to_save=["classifier"],
        )
        # The model's id of each data label: the loss sees model ids, metrics and predictions see data ids.
        self.register_buffer("model_ids", torch.tensor(order) if order else None, persistent=False)
        self.label_names = label_names or [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.metrics = nn.ModuleDict({split: self._metrics() for split in ("val", "test")})
        self._predictions: list[tuple[int, Tensor]] = []

    def forward(self, **batch: Tensor) -> Any:
        """The model's output (with the loss when `labels` are given), logits in the data's label order."""
        return in_data_order(self.model, self.model_ids, batch)

    def evaluate(self, batch: dict[str, Tensor], split: Split, dataloader_idx: int = 0) -> None:
        metrics = self.metrics[split]
        out = self(**model_inputs(batch))
        loss, logits, labels = out.loss, out.logits, batch["labels"]
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss.double(), weight=labels.shape[0])  # the batch mean, weighted: the set's mean
            else:
                metric.update(logits.float(), labels)  # top-k reads the scores, top-1 their argmax

    def end_evaluation(self, split: Split) -> None:
        metrics = self.metrics[split]
        if metrics["loss"].update_count == 0:  # not run (e.g. limit_val_batches=0)
            return
        values = {f"{split}/{name}": metric.compute().double() for name, metric in metrics.items()}  # synced
        self.log_dict(values, prog_bar=True)
        for metric in metrics.values():
            metric.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(**model_inputs(batch, labels=False)).logits
        rows = zip(batch["index"].tolist(), logits.float().softmax(-1).cpu(), strict=True)
        self._predictions.extend(rows)

    def on_predict_epoch_end(self) -> None:
        folder = log_dir(self.trainer)
        rows = gather_by_index(self._predictions)  # collective: every rank calls it
        if self.trainer.is_global_zero:
            self._write_predictions(folder, rows)
        self._predictions = []

    def preprocessors(self) -> list[Any]:
        return [self.processor]  # the image processor the data module used

    def _metrics(self) -> nn.ModuleDict:
        """Loss (float64 weighted mean) and accuracies (integer counts): sums, so N processes equal one."""
        n = len(self.label_names)
        metrics = {"loss": MeanMetric().set_dtype(torch.float64), "accuracy": MulticlassAccuracy(n, average="micro")}
        if n > TOP_K:
            metrics[f"top{TOP_K}_accuracy"] = MulticlassAccuracy(n, top_k=TOP_K, average="micro")
        return MetricStates(metrics)  # float64 sums, never cast to the task's dtype

    def _write_predictions(self, folder: Path, rows: list[tuple[int, Tensor]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "predict_results.txt", "w") as txt, open(folder / "predict_results.jsonl", "w") as jsonl:
            txt.write("index\tprediction\n")
            for index, scores in rows:
                label = self.label_names[int(scores.argmax())]
                probs = dict(zip(self.label_names, scores.tolist(), strict=True))
                txt.write(f"{index}\t{label}\n")
                jsonl.write(json.dumps({"index": index, "prediction": label, "probabilities": probs}) + "\n")
        print(f"predictions written to {folder / 'predict_results'}.txt and .jsonl")
