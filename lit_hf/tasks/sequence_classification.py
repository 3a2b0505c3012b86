"""Sequence classification and regression: any AutoModelForSequenceClassification, with GLUE's exact metrics."""

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification

from lit_hf.adapters import PeftMethod, apply_peft, keep_trainable, restore_frozen
from lit_hf.errors import ConfigError
from lit_hf.glue import GLUE_TASKS, GlueTaskName, split_names
from lit_hf.metrics import MetricStates
from lit_hf.models import DType, fit_embeddings, load_config, load_model, load_tokenizer, model_inputs
from lit_hf.optim import SchedulerType, check_optimizer, configure_adamw
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.predictions import append_rows, log_dir, open_shard, write_merged
from lit_hf.sharding import shard_model
from lit_hf.speed import CompileMode, checkpoint_activations, compile_model
from lit_hf.tasks.labels import configure_labels, make_metric

__all__ = ["SequenceClassificationTask", "make_metric"]


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
        peft: Train adapters instead of all weights: "lora" (through PEFT). Checkpoints then hold only what trains.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r.
        lora_dropout: Dropout on the input of the LoRA branch.
        lora_target_modules: Module names to adapt, e.g. ["c_attn"]. Default: PEFT's choice for the architecture.
        merge_adapters: The export at the end of fit writes the adapters merged into full weights instead of the
            adapter directory.
        compile: `torch.compile` the model for training, evaluation and prediction; the first steps are slower
            while it compiles.
        compile_mode: The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels).
        gradient_checkpointing: Recompute each block's activations in the backward pass: less memory, more compute.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-bert/bert-base-uncased",
        config_name: ModelPath | None = None,
        tokenizer_name: ModelPath | None = None,
        revision: str | None = None,
        cache_dir: LocalPath | None = None,
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
        if glue_task is not None and glue_task not in GLUE_TASKS:
            raise ConfigError(f"Unknown glue_task {glue_task!r}; GLUE tasks are {', '.join(GLUE_TASKS)}.")
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        config = load_config(config_name or model_name_or_path, **hub)
        order = configure_labels(config, label_names, regression, ignore_mismatched_sizes)
        self.tokenizer = load_tokenizer(tokenizer_name or model_name_or_path, **hub)
        # The data pads with the tokenizer's pad token (EOS for decoder-only models, see load_tokenizer); heads that
        # read the last real token (GPT-2, OPT, BLOOM) find it by that id, so the config must name the same one.
        config.pad_token_id = self.tokenizer.pad_token_id
        self.model = load_model(
            AutoModelForSequenceClassification,
            model_name_or_path,
            config=config,
            dtype=dtype,
            from_scratch=from_scratch,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            **hub,
        )
        fit_embeddings(self.model, self.tokenizer)
        self.model = apply_peft(self.model, "SEQ_CLS", self.hparams)  # the head (classifier/score) trains too
        checkpoint_activations(self.model, self.hparams)
        # The model's id of each data label: the loss sees model ids, metrics and predictions see data ids.
        self.register_buffer("model_ids", torch.tensor(order) if order else None, persistent=False)
        self.label_names = label_names or [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.regression = regression or self.model.config.problem_type == "regression"
        self.val_metrics = self._metrics("validation")
        self.test_metrics = self._metrics("test")
        self._shards: list[Path] = []  # per prediction set, this process's rows file (streamed, see predictions.py)

    def forward(self, **batch: Tensor) -> tuple[Tensor | None, Tensor]:
        """The loss (when `labels` are given) and the logits in the data's label order (batch, num_labels)."""
        if self.model_ids is not None and "labels" in batch:
            batch = {**batch, "labels": self.model_ids[batch["labels"]]}
        out = self.model(**batch)
        logits = out.logits if self.model_ids is None else out.logits[:, self.model_ids]
        return out.loss, logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self(**model_inputs(batch))
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # mean over processes, not rank 0's alone
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(self.val_metrics[dataloader_idx], batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(self.test_metrics[dataloader_idx], batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_metrics, "test")

    def on_predict_epoch_start(self) -> None:
        names = split_names(GLUE_TASKS.get(self.hparams.glue_task), "test")
        self._shards = [open_shard(self.trainer, f"predict-{idx}") for idx in range(len(names))]

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        _, logits = self(**model_inputs(batch, labels=False))
        scores = logits.squeeze(-1) if self.regression else logits.float().softmax(-1)
        rows = zip(batch["index"].tolist(), scores.float().cpu().tolist(), strict=True)
        append_rows(self._shards[dataloader_idx], ({"index": i, "scores": s} for i, s in rows))

    def on_predict_epoch_end(self) -> None:
        folder = log_dir(self.trainer)
        for idx in range(len(self._shards)):  # collective: every rank calls it
            write_merged(self.trainer, f"predict-{idx}", partial(self._write_predictions, folder, idx))
        self._shards = []

    def configure_model(self) -> None:
        shard_model(self)  # only under --trainer.strategy=fsdp: each transformer block one FSDP2 unit
        compile_model(self)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def _metric_names(self) -> tuple[str, ...]:
        task = GLUE_TASKS.get(self.hparams.glue_task)
        if task is not None:
            return task.metrics
        return ("pearson", "spearman") if self.regression else ("accuracy",)

    def _metrics(self, kind: str) -> nn.ModuleList:
        """One dict of metrics per evaluation set (MNLI: matched, mismatched), keyed by the logged name."""
        names = ("loss", *self._metric_names())
        sets = split_names(GLUE_TASKS.get(self.hparams.glue_task), kind)
        return nn.ModuleList(MetricStates({n: make_metric(n, len(self.label_names)) for n in names}) for _ in sets)

    def _evaluate(self, metrics: nn.ModuleDict, batch: dict[str, Tensor]) -> None:
        loss, logits = self(**model_inputs(batch))
        labels = batch["labels"]
        preds = logits.squeeze(-1).double() if self.regression else logits.argmax(-1)
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss.double(), weight=labels.shape[0])  # the batch mean, weighted: the set's mean
            else:
                metric.update(preds, labels.double() if self.regression else labels)

    def _end_epoch(self, metrics: nn.ModuleList, kind: str) -> None:
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

    def _write_predictions(self, log_dir: Path, idx: int, rows: Iterator[dict[str, Any]]) -> None:
        task = self.hparams.glue_task
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
