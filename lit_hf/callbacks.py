"""Callbacks every run gets: the results file, learning rate plus throughput while training, a last validation at
`max_steps`, the model in one line, the export."""

import json
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from lit_hf.atomic import write_text
from lit_hf.contracts import Exportable
from lit_hf.errors import LitHFError
from lit_hf.export import (
    data_task_params,
    export_pretrained,
    export_refusal,
    load_checkpoint,
    model_card,
    model_weights,
)
from lit_hf.paths import LocalPath
from lit_hf.predictions import log_dir
from lit_hf.trust import inside


class ResultsWriter(L.Callback):
    """Writes the final metrics of every `fit`, `validate` and `test` run to `results.json` in its log directory.

    Keys are the logged names (`"val/ppl"`); after `fit` they are the last logged values (the last validation's
    metrics, the last step's loss) plus `global_step` and, with a checkpoint callback, `best_model_path`. A quantized
    run adds its coverage report under `quantization`. An existing file is never overwritten (`results-1.json` then).
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        extra: dict[str, Any] = {"global_step": trainer.global_step, **quantization_report(pl_module)}
        if trainer.checkpoint_callback is not None and getattr(trainer.checkpoint_callback, "best_model_path", ""):
            extra["best_model_path"] = trainer.checkpoint_callback.best_model_path
        self._write(trainer, "fit", extra)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self._write(trainer, "validate", quantization_report(pl_module))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test", quantization_report(pl_module))

    def _write(self, trainer: L.Trainer, stage: str, extra: dict[str, Any] | None = None) -> None:
        folder = log_dir(trainer)  # a collective call: every rank gets here
        metrics = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in trainer.callback_metrics.items()}
        self._save(folder, {**metrics, **(extra or {})}, stage)

    @rank_zero_only
    def _save(self, log_dir: Path, metrics: dict[str, Any], stage: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        path, n = log_dir / "results.json", 0
        while path.exists():
            n += 1
            path = log_dir / f"results-{n}.json"
        write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")  # whole or not at all
        print(f"{stage} results written to {path}")


class TrainMonitor(L.Callback):
    """Logs `train/lr` every step and `train/tokens_per_sec`, `train/samples_per_sec` averaged over the epoch.

    Tokens are non-padding input tokens (`attention_mask` ones, else all of `input_ids`), counted on this process
    and multiplied by the number of processes. The first batch of an epoch (or of a resumed fit) starts the clock.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._tokens = self._samples = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a fit resumed mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start: float | None = None
        self._tokens = self._samples = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.optimizers:
            pl_module.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        if self._start is None:
            self._start = time.perf_counter()
            return
        ids = batch.get("input_ids")  # None for images: samples only
        mask = batch.get("attention_mask")
        if ids is not None:
            self._tokens += int(mask.sum()) if mask is not None else ids.numel()
        self._samples += (ids if ids is not None else batch["pixel_values"]).size(0)
        elapsed = time.perf_counter() - self._start
        scale = trainer.world_size / elapsed
        if ids is not None:
            pl_module.log("train/tokens_per_sec", self._tokens * scale, on_step=True, on_epoch=False)
        pl_module.log("train/samples_per_sec", self._samples * scale, on_step=True, on_epoch=False)


class FinalValidation(L.Callback):
    """A fit that ends on `max_steps` validates once at its last step, unless that step validated anyway, as
    `run_clm.py --do_eval` scores the final model: without it, a fit of `max_steps=5` on CoLA left no metrics at
    all, and results.json and the export's card held the metrics of older weights, or none.

    Setting `should_stop` at the last step is how Lightning's own early stopping asks its training loop for a
    validation before it stops (`_TrainingEpochLoop._should_check_val_fx`); the loop stops there anyway.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class OneLineSummary(ModelSummary):
    """The model in one line at the start of fit (`GPT2LMHeadModel in CausalLMTask: 133 K parameters, 133 K
    trainable, 0.5 MB`), in place of Lightning's table of the task's two or three attributes, whose FLOPs column is
    0 for every lit_hf task (they have no `example_input_array`)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self._summary(trainer, pl_module)  # counts sharded (FSDP) and DeepSpeed parameters whole
        model = getattr(pl_module, "model", None)
        name = f"{type(model).__name__} in " if model is not None else ""
        total, trainable = (
            get_human_readable_count(n) for n in (summary.total_parameters, summary.trainable_parameters)
        )
        size = f"{summary.model_size:.1f} MB"
        if trainer.is_global_zero:
            print(f"{name}{type(pl_module).__name__}: {total} parameters, {trainable} trainable, {size}")


class SavePretrained(L.Callback):
    """At the end of `fit`, exports the model to `<log dir>/huggingface` (see `lit_hf.export.export_pretrained`):
    safetensors weights, config with labels, the task's tokenizer, generation config and a model card.

    The weights are the best checkpoint's when a `ModelCheckpoint` monitors a metric, else those fit ended with
    (gathered through the strategy, so sharded FSDP runs save whole tensors). CLI: `--save_pretrained.enabled=false`
    switches the export off, `--save_pretrained.weights=last` exports the last weights even with a monitor.

    The export's folder follows `python -m lit_hf export`'s rules, checked before training: a new or empty folder,
    or an earlier lit_hf export with `overwrite`; a best checkpoint is loaded only from the run's own checkpoint
    folder, weights only (a resumed checkpoint names its own best one, anywhere).

    With LoRA the export holds the adapters (`PeftModel.from_pretrained(base, dir)`) or, with
    `--model.lora.merge=true`, merged weights.

    Args:
        enabled: Export at the end of fit.
        weights: "best": the monitored checkpoint's best weights (the last weights when nothing is monitored);
            "last": the weights fit ended with.
        export_dir: Where the export goes (a new or empty folder); default `huggingface` in the run's log folder.
        overwrite: Replace an earlier lit_hf export in that folder.
    """

    def __init__(
        self,
        enabled: bool = True,
        weights: Literal["best", "last"] = "best",
        export_dir: LocalPath | None = None,
        overwrite: bool = False,
    ) -> None:
        self.enabled, self.weights, self.overwrite = enabled, weights, overwrite
        self.export_dir = None if export_dir is None else Path(export_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.enabled and not isinstance(pl_module, Exportable):
            rank_zero_warn(f"{type(pl_module).__name__} is not a lit_hf task (Exportable): fit will not export it.")
        elif stage == "fit" and self.enabled:
            self._check(trainer, None)  # before training: a refused folder costs no training

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not isinstance(pl_module, Exportable):
            return
        folder = log_dir(trainer)  # collective: all ranks
        best = self._best_path(trainer)
        target = self._check(trainer, best)
        # collective under FSDP; ShardedStrategy's own gives whole tensors, not this rank's shards
        full_state = getattr(trainer.strategy, "full_state_dict", trainer.strategy.lightning_module_state_dict)
        state = None if best else full_state()
        if trainer.is_global_zero:
            state = load_checkpoint(best)["state_dict"] if best else state  # weights only
            metrics = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in trainer.callback_metrics.items()}
            params = data_task_params(trainer.datamodule)  # seq2seq: the source prefix the model learned with
            card = model_card(pl_module, metrics, folder / "config.yaml", best or f"the end of fit ({folder})", params)
            export_pretrained(pl_module, model_weights(state), target, card, params)
            print(f"transformers model saved to {target}" + (f" (best checkpoint {best})" if best else ""))
        trainer.strategy.barrier()

    def _check(self, trainer: L.Trainer, best: str | None) -> Path:
        """The export's folder, if it and `best` may be used; rank zero looks and every rank raises what it found
        (a problem found on one rank alone would leave the others waiting)."""
        target = self.export_dir or log_dir(trainer) / "huggingface"
        problem = None
        if trainer.is_global_zero:
            option = "--save_pretrained.export_dir" if self.export_dir else "The fit-end export's folder"
            in_run = self.export_dir is None  # its default place is in the run's own folder
            problem = export_refusal(target, self.overwrite, option, "--save_pretrained.overwrite", in_run)
            problem = problem or untrusted_best(trainer, best)
        problem = trainer.strategy.broadcast(problem)
        if problem is not None:
            raise LitHFError(problem)
        return target

    def _best_path(self, trainer: L.Trainer) -> str | None:
        callback = trainer.checkpoint_callback
        if self.weights == "last" or callback is None or not getattr(callback, "monitor", None):
            return None
        return getattr(callback, "best_model_path", "") or None


def quantization_report(task: L.LightningModule) -> dict[str, Any]:
    """`{"quantization": <coverage report>}` for a task that evaluated a quantized model, else nothing."""
    quantized = getattr(task, "quantized", None)  # lit_hf.quantization.evaluation.QuantizedEvaluation
    return {} if quantized is None or quantized.report is None else {"quantization": quantized.report.summary()}


def untrusted_best(trainer: L.Trainer, best: str | None) -> str | None:
    """Why `best` may not be loaded, or None: a checkpoint outside the checkpoint callback's folder came from the
    checkpoint the fit resumed (Lightning restores `best_model_path` from it whatever folder it names)."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    if best is None or (folder is not None and inside(best, folder)):
        return None
    return (
        f"the best checkpoint {best!r} (restored from --ckpt_path) is not in this run's checkpoint folder "
        f"{str(folder)!r}, so it is not loaded and nothing was exported; export a checkpoint you trust with "
        "`python -m lit_hf export`, or give --save_pretrained.weights=last."
    )
