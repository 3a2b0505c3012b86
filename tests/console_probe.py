"""A callback a test adds with `--trainer.callbacks+=console_probe.FirstStep`: a marker line on stderr at the first
training batch, so the test can count what a run printed before it trained."""

import sys

import lightning as L

MARKER = "@@ first training step @@"


class FirstStep(L.Callback):
    def __init__(self) -> None:
        self.seen = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if not self.seen:
            self.seen = True
            print(MARKER, file=sys.stderr, flush=True)
