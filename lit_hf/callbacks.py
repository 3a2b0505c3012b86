"""Callbacks every run gets: the results file, and learning rate plus throughput while training."""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from lit_hf.adapters import exportable_model
from lit_hf.predictions import log_dir


class ResultsWriter(L.Callback):
    """Writes the final metrics of every `fit`, `validate` and `test` run to `results.json` in its log directory.

    Keys are the logged names (`"val/ppl"`); after `fit` they are the last logged values (the last validation's
    metrics, the last step's loss) plus `global_step` and, with a checkpoint callback, `best_model_path`. An existing
    file is never overwritten (`results-1.json` then).
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        extra: dict[str, Any] = {"global_step": trainer.global_step}
        if trainer.checkpoint_callback is not None and getattr(trainer.checkpoint_callback, "best_model_path", ""):
            extra["best_model_path"] = trainer.checkpoint_callback.best_model_path
        self._write(trainer, "fit", extra)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking:
            self._write(trainer, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test")

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
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        print(f"{stage} results written to {path}")


class TrainMonitor(L.Callback):
    """Logs `train/lr` every step and `train/tokens_per_sec`, `train/samples_per_sec` averaged over the epoch.

    Tokens are non-padding input tokens (`attention_mask` ones, else all of `input_ids`), counted on this process
    and multiplied by the number of processes. The first batch of an epoch starts the clock.
    """

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
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self._tokens += int(mask.sum()) if mask is not None else ids.numel()
        self._samples += ids.size(0)
        elapsed = time.perf_counter() - self._start
        scale = trainer.world_size / elapsed
        pl_module.log("train/tokens_per_sec", self._tokens * scale, on_step=True, on_epoch=False)
        pl_module.log("train/samples_per_sec", self._samples * scale, on_step=True, on_epoch=False)


class SavePretrained(L.Callback):
    """At the end of `fit`, saves the trained model and the task's tokenizer with `save_pretrained`.

    The directory `<log dir>/huggingface` then loads back with `AutoModelFor*.from_pretrained`; with LoRA it holds
    the adapters (`PeftModel.from_pretrained(base, dir)`) or, with `--model.merge_adapters=true`, merged weights. The
    weights are gathered through the strategy first, so sharded (FSDP) runs save whole tensors.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(model, "save_pretrained"):
            return
        target = log_dir(trainer) / "huggingface"  # collective: all ranks
        state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP
        if trainer.is_global_zero:
            weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
            export = exportable_model(pl_module)  # the model; with LoRA its adapters, or a merged copy
            export.save_pretrained(target, state_dict=weights if export is model else None)
            tokenizer = getattr(pl_module, "tokenizer", None)  # the one the data module uses too (linked)
            if tokenizer is not None:
                tokenizer.save_pretrained(target)
            print(f"transformers model saved to {target}")
        trainer.strategy.barrier()
