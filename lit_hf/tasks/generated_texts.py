"""The files a generating task writes: its hypotheses streamed per process and merged in dataset order."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from lit_hf.predictions import append_rows, log_dir, open_shard, write_lines, write_merged


class GeneratedTexts:
    """`validate` and `test` write `<prefix>_predictions.txt` (fit's validation and the sanity check do not);
    `predict` writes `predictions.txt` and `predictions.jsonl` (`{"index": ..., field: ...}`), all in dataset
    order on any number of processes. Rows go to disk as they are made, so memory does not grow with the set.

    A helper the task holds (not a base class): call `start`/`add`/`finish` from the task's epoch hooks.
    """

    def __init__(self, field: str) -> None:
        self.field = field  # "translation", "summary": the jsonl key of a hypothesis
        self._shard: Path | None = None  # this process's file while an epoch that writes runs

    def start(self, trainer: L.Trainer, prefix: str, generates: bool) -> None:
        """At epoch start (a collective call): `prefix` is "val", "test" or "predictions"."""
        writes = trainer.state.fn in (TrainerFn.VALIDATING, TrainerFn.TESTING) and not trainer.sanity_checking
        writes = writes or trainer.state.fn == TrainerFn.PREDICTING
        self._shard = open_shard(trainer, prefix) if writes and generates else None

    def add(self, batch: dict[str, Any], hypotheses: list[str]) -> None:
        if self._shard is not None:
            rows = zip(batch["index"].tolist(), hypotheses, strict=True)
            append_rows(self._shard, ({"index": i, self.field: text} for i, text in rows))

    def finish(self, trainer: L.Trainer, prefix: str) -> None:
        """At epoch end (a collective call): rank zero merges the shards into the files."""
        if self._shard is None:
            return
        self._shard = None
        folder = log_dir(trainer)
        if prefix != "predictions":
            path = folder / f"{prefix}_predictions.txt"
            write_merged(trainer, prefix, lambda rows: write_lines(path, (row[self.field] for row in rows)))
            return

        def write(rows: Iterator[dict[str, Any]]) -> None:
            with open(folder / "predictions.txt", "w", encoding="utf-8") as txt:
                with open(folder / "predictions.jsonl", "w", encoding="utf-8") as jsonl:
                    for row in rows:
                        txt.write(row[self.field] + "\n")
                        jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")

        write_merged(trainer, prefix, write)
