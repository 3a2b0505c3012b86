"""Sequence classification and regression: any AutoModelForSequenceClassification, with GLUE's exact metrics."""

import json
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from lit_hf.data.glue import GLUE_TASKS, GlueTaskName, split_names
from lit_hf.data.sampling import gather_by_index
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.hub import from_hub
from lit_hf.metrics import ExactSpearman
from lit_hf.models import DType
from lit_hf.optim import SchedulerType, adamw_with_schedule, check_warmup


def make_metric(name: str, num_labels: int) -> Metric:
    """One metric, in float64 where it accumulates sums, so results do not depend on batching or processes."""
    metric = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=max(num_labels, 2), average="micro"),
        "f1": BinaryF1Score,  # of the positive class (id 1: equivalent / duplicate), as GLUE scores MRPC and QQP
        "matthews": lambda: MatthewsCorrCoef(task="multiclass", num_classes=max(num_labels, 2)),
        "pearson": PearsonCorrCoef,
        "spearman": ExactSpearman,
        "loss": MeanMetric,
    }[name]()
    return metric.set_dtype(torch.float64)


def is_default_labels(config: PretrainedConfig) -> bool:
    return all(name == f"LABEL_{i}" for i, name in config.id2label.items())


def head_size(config: PretrainedConfig) -> int | None:
    """The number of outputs of the checkpoint's classification head, or None when it has none (a base model)."""
    has_head = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    return config.num_labels if has_head else None


def configure_labels(
    config: PretrainedConfig, label_names: list[str] | None, regression: bool, ignore_mismatched_sizes: bool
) -> list[int] | None:
    """Set the config's labels from the data; returns the model's id for each data label when the checkpoint
    already has the same labels in another order (whose order is kept, as run_glue does), else None."""
    if label_names is None and not regression:
        return None  # no labels from the data: the checkpoint's own
    wanted = 1 if regression else len(label_names)
    size = head_size(config)
    if size is not None and size != wanted and not ignore_mismatched_sizes:
        what = "a regression (1 output)" if regression else f"{wanted} labels ({', '.join(label_names)})"
        raise LitHFError(
            f"The data has {what} but the checkpoint's classification head has {size} outputs "
            f"({', '.join(config.id2label.values())}); pass --model.ignore_mismatched_sizes=true for a new head."
        )
    if regression:
        config.num_labels, config.problem_type = 1, "regression"
        return None
    own = {name.lower(): int(i) for name, i in config.label2id.items()}
    if size == wanted and not is_default_labels(config):
        if sorted(own) == sorted(name.lower() for name in label_names):
            return [own[name.lower()] for name in label_names]
        message = f"The checkpoint's labels {sorted(config.label2id)} differ from the data's; using the data's."
        warnings.warn(message, stacklevel=3)
    config.num_labels, config.problem_type = wanted, "single_label_classification"
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    return None


class SequenceClassificationTask(L.LightningModule):
    """Classification (or regression) of texts and text pairs from batches of `input_ids`, `attention_mask` and
    `labels` (class ids in the data's label order, floats for regression).

    Logs `train/loss` every step; per validation set, once per epoch, `val/loss` and the task's metrics:
    `val/matthews` (CoLA), `val/accuracy`, `val/f1` (MRPC, QQP), `val/pearson`, `val/spearman` (STS-B) and
    `val/combined_score` (their mean) where a task has two. MNLI logs `val_matched/...` and `val_mismatched/...`;
    `test` logs the same under `test`. `predict` writes `predict_results_<task>.txt` and `.jsonl` to the log dir.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForSequenceClassification.from_pretrained`.
        config_name: Config to use instead of the model's own (a hub id or directory).
        tokenizer_name: Tokenizer to use instead of the model's own; the data module follows it.
        revision: Hub branch, tag or commit of the model.
        cache_dir: Where downloaded models are stored (default: the Hugging Face cache).
        trust_remote_code: Allow model code from the hub. Only for repositories you trust.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        label_names: Class names in id order. Linked from the data module; None keeps the checkpoint's own.
        regression: One output trained with mean squared error (STS-B). Linked from the data module.
        glue_task: GLUE task whose metrics to report. Linked from `--data.task_name`; None: accuracy, or
            Pearson and Spearman for regression.
        ignore_mismatched_sizes: Put a new, randomly initialised head on a checkpoint whose head has another size.
        learning_rate: Peak AdamW learning rate, reached at the end of warmup.
        weight_decay: Decoupled weight decay for matrices; biases and norm weights get none.
        adam_epsilon: AdamW epsilon.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from zero.
        warmup_steps: Warmup length in optimizer steps (instead of warmup_ratio).
        lr_scheduler_type: Schedule after warmup, as `transformers.get_scheduler` names it.
    """

    def __init__(
        self,
        model_name_or_path: str = "google-bert/bert-base-uncased",
        config_name: str | None = None,
        tokenizer_name: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        label_names: list[str] | None = None,
        regression: bool = False,
        glue_task: GlueTaskName | None = None,
        ignore_mismatched_sizes: bool = False,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        lr_scheduler_type: SchedulerType = "linear",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_warmup(warmup_ratio, warmup_steps)
        if glue_task is not None and glue_task not in GLUE_TASKS:
            raise ConfigError(f"Unknown glue_task {glue_task!r}; GLUE tasks are {', '.join(GLUE_TASKS)}.")
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        config = from_hub(AutoConfig.from_pretrained, config_name or model_name_or_path, "model config", **hub)
        order = configure_labels(config, label_names, regression, ignore_mismatched_sizes)
        tokenizer = from_hub(AutoTokenizer.from_pretrained, tokenizer_name or model_name_or_path, "tokenizer", **hub)
        if tokenizer.pad_token is None:  # decoder-only: pad with EOS, and tell the model which token ends a text
            config.pad_token_id = tokenizer.eos_token_id
        elif config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        if from_scratch:
            torch_dtype = None if dtype in (None, "auto") else getattr(torch, dtype)
            self.model = AutoModelForSequenceClassification.from_config(
                config, trust_remote_code=trust_remote_code, dtype=torch_dtype
            )
        else:
            self.model = from_hub(
                AutoModelForSequenceClassification.from_pretrained,
                model_name_or_path,
                "model",
                config=config,
                dtype=dtype,
                ignore_mismatched_sizes=ignore_mismatched_sizes,
                **hub,
            )
        if len(tokenizer) > self.model.get_input_embeddings().weight.shape[0]:
            self.model.resize_token_embeddings(len(tokenizer))
        # The model's id of each data label: the loss sees model ids, metrics and predictions see data ids.
        self.register_buffer("model_ids", torch.tensor(order) if order else None, persistent=False)
        self.label_names = label_names or [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.regression = regression or self.model.config.problem_type == "regression"
        self.val_metrics = self._metrics("validation")
        self.test_metrics = self._metrics("test")
        self._predictions: dict[int, list[tuple[int, Tensor]]] = {}

    def forward(self, **batch: Tensor) -> tuple[Tensor | None, Tensor]:
        """The loss (when `labels` are given) and the logits in the data's label order (batch, num_labels)."""
        if self.model_ids is not None and "labels" in batch:
            batch = {**batch, "labels": self.model_ids[batch["labels"]]}
        out = self.model(**batch)
        logits = out.logits if self.model_ids is None else out.logits[:, self.model_ids]
        return out.loss, logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self(**batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(self.val_metrics[dataloader_idx], batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(self.test_metrics[dataloader_idx], batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        inputs = {k: v for k, v in batch.items() if k not in ("idx", "labels")}
        _, logits = self(**inputs)
        scores = logits.squeeze(-1) if self.regression else logits.float().softmax(-1)
        rows = zip(batch["idx"].tolist(), scores.float().cpu(), strict=True)
        self._predictions.setdefault(dataloader_idx, []).extend(rows)

    def on_predict_epoch_end(self) -> None:
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective: every rank calls it
        names = split_names(GLUE_TASKS.get(self.hparams.glue_task), "test")
        for idx in range(len(names)):
            rows = gather_by_index(self._predictions.get(idx, []))  # collective: every rank calls it
            if self.trainer.is_global_zero:
                self._write_predictions(log_dir, idx, rows)
        self._predictions = {}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_with_schedule(
            self.model,
            total_steps=int(self.trainer.estimated_stepping_batches),
            learning_rate=hp.learning_rate,
            weight_decay=hp.weight_decay,
            adam_epsilon=hp.adam_epsilon,
            warmup_ratio=hp.warmup_ratio,
            warmup_steps=hp.warmup_steps,
            lr_scheduler_type=hp.lr_scheduler_type,
        )

    def _metric_names(self) -> tuple[str, ...]:
        task = GLUE_TASKS.get(self.hparams.glue_task)
        if task is not None:
            return task.metrics
        return ("pearson", "spearman") if self.regression else ("accuracy",)

    def _metrics(self, kind: str) -> nn.ModuleList:
        """One dict of metrics per evaluation set (MNLI: matched, mismatched), keyed by the logged name."""
        names = ("loss", *self._metric_names())
        sets = split_names(GLUE_TASKS.get(self.hparams.glue_task), kind)
        return nn.ModuleList(nn.ModuleDict({n: make_metric(n, len(self.label_names)) for n in names}) for _ in sets)

    def _update(self, metrics: nn.ModuleDict, batch: dict[str, Tensor]) -> None:
        loss, logits = self(**batch)
        labels = batch["labels"]
        preds = logits.squeeze(-1).double() if self.regression else logits.argmax(-1)
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss.double(), weight=labels.shape[0])  # the batch mean, weighted: the set's mean
            else:
                metric.update(preds, labels.double() if self.regression else labels)

    def _log_epoch(self, metrics: nn.ModuleList, kind: str) -> None:
        sets = split_names(GLUE_TASKS.get(self.hparams.glue_task), "val")
        prefixes = [name if kind == "val" else name.replace("val", kind, 1) for name in sets]
        for prefix, per_set in zip(prefixes, metrics, strict=True):
            if per_set["loss"].update_count == 0:  # this set was not run (e.g. limit_val_batches=0)
                continue
            values = {name: metric.compute().double() for name, metric in per_set.items()}  # synced across processes
            scores = [values[name] for name in self._metric_names()]
            if len(scores) > 1:
                values["combined_score"] = torch.stack(scores).mean()
            self.log_dict({f"{prefix}/{n}": v for n, v in values.items()}, add_dataloader_idx=False, prog_bar=True)
            for metric in per_set.values():
                metric.reset()

    def _write_predictions(self, log_dir: Path, idx: int, rows: list[tuple[int, Tensor]]) -> None:
        task = self.hparams.glue_task
        name = "predict_results" + (f"_{task}" if task else "") + ("-mm" if idx == 1 else "")
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.txt", "w") as txt, open(log_dir / f"{name}.jsonl", "w") as jsonl:
            txt.write("index\tprediction\n")
            for index, scores in rows:
                if self.regression:
                    txt.write(f"{index}\t{scores.item():3.3f}\n")
                    jsonl.write(json.dumps({"index": index, "score": scores.item()}) + "\n")
                    continue
                label = self.label_names[int(scores.argmax())]
                probs = dict(zip(self.label_names, scores.tolist(), strict=True))
                txt.write(f"{index}\t{label}\n")
                jsonl.write(json.dumps({"index": index, "prediction": label, "probabilities": probs}) + "\n")
        print(f"predictions written to {log_dir / name}.txt and .jsonl")
