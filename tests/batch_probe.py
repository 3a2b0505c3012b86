"""A callback a test adds with `--trainer.callbacks+=batch_probe.BatchProbe`: each rank saves the training batches it
took, so a test can compare them with a reference."""

from pathlib import Path

import lightning as L
import numpy as np


class BatchProbe(L.Callback):
    """Writes `<folder>/rank-<global rank>.npz`: `input_ids` (steps, batch, block) and each step's `epoch`.

    Args:
        folder: Where the files go.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[np.ndarray] = []
        self.epochs: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.batches.append(batch["input_ids"].cpu().numpy())
        self.epochs.append(trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank-{trainer.global_rank}.npz"
        np.savez(path, input_ids=np.stack(self.batches), epoch=np.array(self.epochs))
