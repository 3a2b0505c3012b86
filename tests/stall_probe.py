"""A callback a test adds with `--trainer.callbacks+=stall_probe.StallAt`: the fit stops at a chosen optimizer step
and waits there, so the test can signal the process at a known place."""

import time
from pathlib import Path

import lightning as L


class StallAt(L.Callback):
    """At the first batch of optimizer step `step` (0-based: after `step` optimizer steps, their logging, validation
    and checkpoints), writes `marker` and sleeps until the test signals the process.

    Args:
        step: The optimizer step to stop at.
        marker: The file written once the process waits.
    """

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(self.step))
            time.sleep(600)
