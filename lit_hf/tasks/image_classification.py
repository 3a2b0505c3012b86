"""Image classification: any AutoModelForImageClassification (ResNet, ViT, ConvNeXt), top-1/top-5 accuracy exact."""

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from transformers import AutoModelForImageClassification

from lit_hf.adapters import PeftMethod, apply_peft, keep_trainable, restore_frozen
from lit_hf.metrics import MetricStates
from lit_hf.models import DType, load_config, load_image_processor, load_model, model_inputs
from lit_hf.optim import SchedulerType, check_optimizer, configure_adamw
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.predictions import gather_by_index, log_dir
from lit_hf.sharding import shard_model
from lit_hf.speed import CompileMode, checkpoint_activations, compile_model
from lit_hf.tasks.labels import configure_labels

TOP_K = 5  # the second accuracy reported, as ImageNet results are; only with more than 5 classes


class ImageClassificationTask(L.LightningModule):
    """Classification of batches of `pixel_values` (batch, 3, height, width) and `labels` (the data's class ids).

    Logs `train/loss` every step; `val/loss`, `val/accuracy` (top-1) and, with more than 5 classes,
    `val/top5_accuracy` once per validation epoch (`test/...` for `test`), all exact over the whole set on any
    number of processes. `predict` writes `predict_results.txt` (index, label) and `predict_results.jsonl` (with
    every class's probability) to the log dir, in input order. The image processor is saved with the export.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForImageClassification.from_pretrained`.
        config_name: Config to use instead of the model's own (a hub id or directory).
        image_processor_name: Image processor to use instead of the model's own; the data module follows it.
        revision: Hub branch, tag or commit of the model.
        cache_dir: Where downloaded models are stored (default: the Hugging Face cache).
        trust_remote_code: Allow model code from the hub. Only for repositories you trust.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        label_names: Class names in id order. Linked from the data module; None keeps the checkpoint's own.
        ignore_mismatched_sizes: Put a new, randomly initialised head on a checkpoint whose head has another size
            (e.g. ImageNet's 1000 classes for CIFAR-10's 10).
        learning_rate: Peak AdamW learning rate, reached at the end of warmup.
        weight_decay: Decoupled weight decay for matrices; biases and norm weights get none.
        adam_epsilon: AdamW epsilon.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from zero.
        warmup_steps: Warmup length in optimizer steps (instead of warmup_ratio).
        lr_scheduler_type: Schedule after warmup, as `transformers.get_scheduler` names it.
        peft: Train adapters instead of all weights: "lora" (through PEFT). Checkpoints then hold only what trains.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r.
        lora_dropout: Dropout on the input of the LoRA branch.
        lora_target_modules: Module names to adapt, e.g. ["query", "value"]. Default: PEFT's choice for the
            architecture.
        merge_adapters: The export at the end of fit writes the adapters merged into full weights instead of the
            adapter directory.
        compile: `torch.compile` the model for training, evaluation and prediction; the first steps are slower
            while it compiles.
        compile_mode: The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels).
        gradient_checkpointing: Recompute each block's activations in the backward pass: less memory, more compute.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "microsoft/resnet-50",
        config_name: ModelPath | None = None,
        image_processor_name: ModelPath | None = None,
        revision: str | None = None,
        cache_dir: LocalPath | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        label_names: list[str] | None = None,
        ignore_mismatched_sizes: bool = False,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        lr_scheduler_type: SchedulerType = "linear",
        peft: PeftMethod | None = None,
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        merge_adapters: bool = False,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer(learning_rate, weight_decay, adam_epsilon, warmup_ratio, warmup_steps)
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        config = load_config(config_name or model_name_or_path, **hub)
        order = configure_labels(config, label_names, False, ignore_mismatched_sizes)
        self.processor = load_image_processor(image_processor_name or model_name_or_path, **hub)  # saved by export
        self.model = load_model(
            AutoModelForImageClassification,
            model_name_or_path,
            config=config,
            dtype=dtype,
            from_scratch=from_scratch,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            **hub,
        )
        self.model.train()  # from_pretrained returns eval mode (BatchNorm would not learn its statistics)
        self.model = apply_peft(self.model, None, self.hparams, modules_to_save=["classifier"])  # the head trains
        checkpoint_activations(self.model, self.hparams)
        # The model's id of each data label: the loss sees model ids, metrics and predictions see data ids.
        self.register_buffer("model_ids", torch.tensor(order) if order else None, persistent=False)
        self.label_names = label_names or [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.val_metrics = self._metrics()
        self.test_metrics = self._metrics()
        self._predictions: list[tuple[int, Tensor]] = []

    def forward(self, **batch: Tensor) -> tuple[Tensor | None, Tensor]:
        """The loss (when `labels` are given) and the logits in the data's label order (batch, num_labels)."""
        if self.model_ids is not None and "labels" in batch:
            batch = {**batch, "labels": self.model_ids[batch["labels"]]}
        out = self.model(**batch)
        logits = out.logits if self.model_ids is None else out.logits[:, self.model_ids]
        return out.loss, logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self(**model_inputs(batch))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(self.test_metrics, batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, logits = self(**model_inputs(batch, labels=False))
        rows = zip(batch["index"].tolist(), logits.float().softmax(-1).cpu(), strict=True)
        self._predictions.extend(rows)

    def on_predict_epoch_end(self) -> None:
        folder = log_dir(self.trainer)
        rows = gather_by_index(self._predictions)  # collective: every rank calls it
        if self.trainer.is_global_zero:
            self._write_predictions(folder, rows)
        self._predictions = []

    def configure_model(self) -> None:
        shard_model(self)  # only under --trainer.strategy=fsdp
        compile_model(self)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def _metrics(self) -> nn.ModuleDict:
        """Loss (float64 weighted mean) and accuracies (integer counts): sums, so N processes equal one."""
        n = len(self.label_names)
        metrics = {"loss": MeanMetric().set_dtype(torch.float64), "accuracy": MulticlassAccuracy(n, average="micro")}
        if n > TOP_K:
            metrics[f"top{TOP_K}_accuracy"] = MulticlassAccuracy(n, top_k=TOP_K, average="micro")
        return MetricStates(metrics)  # float64 sums, never cast to the task's dtype

    def _evaluate(self, metrics: nn.ModuleDict, batch: dict[str, Tensor]) -> None:
        loss, logits = self(**model_inputs(batch))
        labels = batch["labels"]
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss.double(), weight=labels.shape[0])  # the batch mean, weighted: the set's mean
            else:
                metric.update(logits.float(), labels)  # top-k reads the scores, top-1 their argmax

    def _end_epoch(self, metrics: nn.ModuleDict, prefix: str) -> None:
        if metrics["loss"].update_count == 0:  # not run (e.g. limit_val_batches=0)
            return
        values = {f"{prefix}/{name}": metric.compute().double() for name, metric in metrics.items()}  # synced
        self.log_dict(values, prog_bar=True)
        for metric in metrics.values():
            metric.reset()

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
