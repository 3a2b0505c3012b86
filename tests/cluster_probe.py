"""A callback the scaling tests add with `--trainer.callbacks+=cluster_probe.ClusterProbe`: each rank writes which
cluster environment Lightning chose and where the rank sits, so a test can assert it."""

import json
from pathlib import Path

import lightning as L


class ClusterProbe(L.Callback):
    """Writes `<folder>/rank-<global rank>.json` with the environment's class name, ranks and world size.

    Args:
        folder: Where the files go.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        env = trainer.strategy.cluster_environment
        facts = {
            "environment": type(env).__name__,
            "global_rank": trainer.global_rank,
            "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank,
            "world_size": trainer.world_size,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank-{trainer.global_rank}.json").write_text(json.dumps(facts))
