"""Sequence classification and regression: any AutoModelForSequenceClassification, with GLUE's exact metrics."""

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification

from lit_hf.data.glue import GLUE_TASKS, GlueTaskName, split_names
from lit_hf.errors import ConfigError
from lit_hf.metrics import MetricStates
from lit_hf.models import DType, model_inputs
from lit_hf.options import HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.predictions import append_rows, log_dir, open_shard, write_merged
from lit_hf.tasks.base import Split, TransformersTask
from lit_hf.tasks.labels import configure_labels, in_data_order, make_metric

__all__ = ["SequenceClassificationTask", "make_metric"]


class SequenceClassificationTask(TransformersTask):
    """Classification (or regression) of texts and text pairs from batches of `input_ids`, `attention_mask` and
    `labels` (class ids in the data's label order, floats for regression).

    Logs `train/loss` every step; per validation set, once per epoch, `val/loss` and the task's metrics:
    `val/matthews` (CoLA), `val/accuracy`, `val/f1` (MRPC, QQP), `val/pearson`, `val/spearman` (STS-B) and
    `val/combined_score` (their mean) where a task has two. MNLI logs `val_matched/...` and `val_mismatched/...`;
    `test` logs the same under `test`. `predict` writes `predict_results_<task>.txt` and `.jsonl` to the log dir.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForSequenceClassification.from_pretrained`.
        label_names: Class names in id order. Linked from the data module; None keeps the checkpoint's own.
        regression: One output trained with mean squared error (STS-B). Linked from the data module.
        glue_task: GLUE task whose metrics to report. Linked from `--data.task_name`; None: accuracy, or
            Pearson and Spearman for regression.
        ignore_mismatched_sizes: Put a new, randomly initialised head on a checkpoint whose head has another size.
        lora: Train LoRA adapters (and the head) instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` and gradient checkpointing.
    """

    pipeline_tag = "text-classification"

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-bert/bert-base-uncased",
        hub: HubOptions = HubOptions(),
        dtype: DType | None = None,
        from_scratch: bool = False,
        label_names: list[str] | None = None,
        regression: bool = False,
        glue_task: GlueTaskName | None = None,
        ignore_mismatched_sizes: bool = False,
        optim: OptimOptions = OptimOptions(learning_rate=2e-5),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed, quantization)
        if glue_task is not None and glue_task not in GLUE_TASKS:
            raise ConfigError(f"Unknown glue_task {glue_task!r}; GLUE tasks are {', '.join(GLUE_TASKS)}.")
        self.glue_task = glue_task
        config = self.load_config()
        order = configure_labels(config, label_names, regression, ignore_mismatched_sizes)
        self.tokenizer = self.load_tokenizer()
        # The data pads with the tokenizer's pad token (EOS for decoder-only models, see load_tokenizer); heads that
        # read the last real token (GPT-2, OPT, BLOOM) find it by that id, so the config must name the same one.
        config.pad_token_id = self.tokenizer.pad_token_id
        self.model = self.load_model(  # with LoRA the head (classifier/score) trains too
            AutoModelForSequenceClassification,
            config,
            "SEQ_CLS",
            tokenizer=self.tokenizer,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
        )
        # The model's id of each data label: the loss sees model ids, metrics and predictions see data ids.
        self.register_buffer("model_ids", torch.tensor(order) if order else None, persistent=False)
        self.label_names = label_names or [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.regression = regression or self.model.config.problem_type == "regression"
        self.metrics = nn.ModuleDict({"val": self._metrics("validation"), "test": self._metrics("test")})
        self._shards: list[Path] = []  # per prediction set, this process's rows file (streamed, see predictions.py)

    def forward(self, **batch: Tensor) -> Any:
        """The model's output (with the loss when `labels` are given), logits in the data's label order."""
        return in_data_order(self.model, self.model_ids, batch)

    def evaluate(self, batch: dict[str, Tensor], split: Split, dataloader_idx: int = 0) -> None:
        metrics = self.metrics[split][dataloader_idx]
        out = self(**model_inputs(batch))
        loss, logits, labels = out.loss, out.logits, batch["labels"]
        preds = logits.squeeze(-1).double() if self.regression else logits.argmax(-1)
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss.double(), weight=labels.shape[0])  # the batch mean, weighted: the set's mean
            else:
                metric.update(preds, labels.double() if self.regression else labels)

    def end_evaluation(self, split: Split) -> None:
        sets = split_names(GLUE_TASKS.get(self.glue_task), "val")
        prefixes = [name if split == "val" else name.replace("val", split, 1) for name in sets]
        for prefix, per_set in zip(prefixes, self.metrics[split], strict=True):
            if per_set["loss"].update_count == 0:  # this set was not run (e.g. limit_val_batches=0)
                continue
            values = {name: metric.compute().double() for name, metric in per_set.items()}  # synced across processes
            scores = [values[name] for name in self._metric_names()]
            if len(scores) > 1:
                values["combined_score"] = torch.stack(scores).mean()
            self.log_dict({f"{prefix}/{n}": v for n, v in values.items()}, add_dataloader_idx=False, prog_bar=True)
            for metric in per_set.values():
                metric.reset()

    def on_predict_epoch_start(self) -> None:
        # One file per prediction set the trainer holds: MNLI's two test sets, or one predict_file.
        sets = len(self.trainer.num_predict_batches)
        self._shards = [open_shard(self.trainer, f"predict-{idx}") for idx in range(sets)]

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(**model_inputs(batch, labels=False)).logits
        scores = logits.squeeze(-1) if self.regression else logits.float().softmax(-1)
        rows = zip(batch["index"].tolist(), scores.float().cpu().tolist(), strict=True)
        append_rows(self._shards[dataloader_idx], ({"index": i, "scores": s} for i, s in rows))

    def on_predict_epoch_end(self) -> None:
        folder = log_dir(self.trainer)
        for idx in range(len(self._shards)):  # collective: every rank calls it
            write_merged(self.trainer, f"predict-{idx}", partial(self._write_predictions, folder, idx))
        self._shards = []

    def _metric_names(self) -> tuple[str, ...]:
        task = GLUE_TASKS.get(self.glue_task)
        if task is not None:
            return task.metrics
        return ("pearson", "spearman") if self.regression else ("accuracy",)

    def _metrics(self, kind: str) -> nn.ModuleList:
        """One dict of metrics per evaluation set (MNLI: matched, mismatched), keyed by the logged name."""
        names = ("loss", *self._metric_names())
        sets = split_names(GLUE_TASKS.get(self.glue_task), kind)
        return nn.ModuleList(MetricStates({n: make_metric(n, len(self.label_names)) for n in names}) for _ in sets)

    def _write_predictions(self, log_dir: Path, idx: int, rows: Iterator[dict[str, Any]]) -> None:
        task = self.glue_task
        name = "predict_results" + (f"_{task}" if task else "") + ("-mm" if idx == 1 else "")
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.txt", "w") as txt, open(log_dir / f"{name}.jsonl", "w") as jsonl:
            txt.write("index\tprediction\n")
            for row in rows:
                index, scores = row["index"], row["scores"]
                if self.regression:
                    txt.write(f"{index}\t{scores:3.3f}\n")
                    jsonl.write(json.dumps({"index": index, "score": scores}) + "\n")
                    continue
                label = self.label_names[max(range(len(scores)), key=scores.__getitem__)]  # the first maximum
                probs = dict(zip(self.label_names, scores, strict=True))
                txt.write(f"{index}\t{label}\n")
                jsonl.write(json.dumps({"index": index, "prediction": label, "probabilities": probs}) + "\n")
        print(f"predictions written to {log_dir / name}.txt and .jsonl")
