"""GLUE in one place: each task's columns, labels, metrics and evaluation sets (read by data and tasks), and a reader
for the original GLUE download's TSV files."""

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict

from lit_hf.data.cache import file_identity
from lit_hf.data.sources import check_utf8, load_hub
from lit_hf.errors import ConfigError, LitHFError

GlueTaskName = Literal["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"]


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task. Column names are those of the hub's `nyu-mll/glue`; `file_columns` maps them to the TSV's."""

    folder: str  # folder in the GLUE download (glue_data/<folder>)
    text: str
    pair: str | None
    labels: tuple[str, ...] | None  # class names in id order; None: regression (STS-B)
    metrics: tuple[str, ...]
    file_columns: dict[str, str]  # hub column -> header name in the TSV; "label" is the gold label
    eval_sets: tuple[str, ...] = ("",)  # MNLI has two: validation_matched and validation_mismatched
    headerless: tuple[str, ...] | None = None  # column names of train/dev files that have no header row (CoLA)
    file_names: dict[str, str] = field(default_factory=dict)  # split -> file, where not "<split>.tsv"
    skip_short_rows: bool = False  # QQP's train file has a few broken rows; GLUE's own processor skipped them


NLI = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")

# Labels, columns and splits as in `nyu-mll/glue` (its ClassLabel order) and the GLUE download
# (gluebenchmark.com, download_glue_data.py); metrics as in the GLUE paper (Wang et al., 2019, table 1).
# fmt: off
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", "sentence", None, ("unacceptable", "acceptable"), ("matthews",),
                     {"sentence": "sentence", "label": "label"}, headerless=("source", "label", "star", "sentence")),
    "sst2": GlueTask("SST-2", "sentence", None, ("negative", "positive"), ("accuracy",),
                     {"sentence": "sentence", "label": "label"}),
    "mrpc": GlueTask("MRPC", "sentence1", "sentence2", ("not_equivalent", "equivalent"), ("accuracy", "f1"),
                     {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
    "qqp": GlueTask("QQP", "question1", "question2", ("not_duplicate", "duplicate"), ("accuracy", "f1"),
                    {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
                    skip_short_rows=True),
    "stsb": GlueTask("STS-B", "sentence1", "sentence2", None, ("pearson", "spearman"),
                     {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
    "mnli": GlueTask("MNLI", "premise", "hypothesis", MNLI_LABELS, ("accuracy",),
                     {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
                     eval_sets=("matched", "mismatched")),
    "qnli": GlueTask("QNLI", "question", "sentence", NLI, ("accuracy",),
                     {"question": "question", "sentence": "sentence", "label": "label"}),
    "rte": GlueTask("RTE", "sentence1", "sentence2", NLI, ("accuracy",),
                    {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    "wnli": GlueTask("WNLI", "sentence1", "sentence2", ("not_entailment", "entailment"), ("accuracy",),
                     {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    # The diagnostic set: prediction only, with a model trained on MNLI.
    "ax": GlueTask("diagnostic", "premise", "hypothesis", MNLI_LABELS, ("accuracy",),
                   {"premise": "sentence1", "hypothesis": "sentence2"}, file_names={"test": "diagnostic.tsv"}),
}
# fmt: on


def split_names(task: GlueTask | None, kind: str) -> list[str]:
    """`validation` -> ["validation"], or for MNLI ["validation_matched", "validation_mismatched"]."""
    sets = task.eval_sets if task is not None else ("",)
    return [f"{kind}_{name}" if name else kind for name in sets]


def glue_file(data_dir: str, task: GlueTask, split: str) -> Path:
    """`<data_dir>/<folder>/<file>`, or `<data_dir>/<file>` when data_dir is the task's own folder."""
    name = task.file_names.get(split, split.replace("validation", "dev") + ".tsv")
    root = Path(data_dir) / task.folder if (Path(data_dir) / task.folder).is_dir() else Path(data_dir)
    return root / name


def read_glue_tsv(path: Path, task: GlueTask, split: str) -> Dataset:
    """The task's text columns (hub names) and, where the file has one, the gold label as written (`label`).

    Fields are split on tabs only, with no quote handling (STS-B and QQP have stray quotes); a byte-order mark
    (MRPC) is dropped. Test files have no label column.
    """
    if not os.path.isfile(path):
        way_out = "; `predict` classifies your own file with --data.predict_file" if split.startswith("test") else ""
        raise LitHFError(f"The GLUE {task.folder} {split} file {str(path)!r} does not exist{way_out}.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LitHFError(f"Could not read the GLUE file {str(path)!r}: {err}") from err
    check_utf8(str(path), f"The GLUE {task.folder} {split} file")  # UTF-16 without a byte-order mark decodes
    has_header = task.headerless is None or split.startswith("test")
    header = rows.pop(0) if has_header and rows else list(task.headerless or ())
    wanted = {col: name for col, name in task.file_columns.items() if col != "label" or name in header}
    missing = [name for name in wanted.values() if name not in header]
    if missing:
        raise LitHFError(f"{str(path)!r} has no column {missing[0]!r} (header: {', '.join(header)}).")
    positions = {col: header.index(name) for col, name in wanted.items()}
    columns: dict[str, list[str]] = {col: [] for col in positions}
    for line, row in enumerate(rows, start=1 + has_header):
        if not row:  # a blank line
            continue
        if len(row) < len(header):
            if task.skip_short_rows:
                continue
            raise LitHFError(f"{str(path)!r} line {line} has {len(row)} fields; the header has {len(header)}.")
        for col, pos in positions.items():
            columns[col].append(row[pos])
    return Dataset.from_dict(columns)


def load_glue(
    task: GlueTask, task_name: str, data_dir: str | None, splits: list[str], cache_dir: str | None
) -> DatasetDict:
    """The `splits` of a GLUE task from `data_dir` (the original download layout), else from the hub."""
    if data_dir:
        return DatasetDict({s: read_glue_tsv(glue_file(data_dir, task, s), task, s) for s in splits})
    raw = load_hub("nyu-mll/glue", task_name, None, cache_dir)
    for split in list(raw):  # the hub's test splits carry -1 for "no label"
        if "label" in raw[split].column_names and raw[split].unique("label") == [-1]:
            raw[split] = raw[split].remove_columns("label")
    return raw


def classification_splits(
    task: GlueTask | None, stage: str | None, data_dir: str | None, files: dict[str, str]
) -> list[str]:
    """The splits a stage reads: a GLUE task's (MNLI has two of each evaluation kind; `ax` only a test set), or
    those of the user's `files` (task None); without a stage, all there are."""
    train, validation, test = ["train"], split_names(task, "validation"), split_names(task, "test")
    if task is GLUE_TASKS["ax"]:  # the diagnostic set has only a test file
        train, validation = [], []
    if files and "validation" not in files:  # validation is optional for your own files
        validation = []
    if data_dir and len(validation) > 1:  # MNLI: score the dev files there are (error if none)
        validation = [s for s in validation if glue_file(data_dir, task, s).is_file()] or validation
    by_stage = {"fit": train + validation, "validate": validation, "test": test, "predict": test}
    if stage in by_stage:
        return by_stage[stage]
    if files:
        return [s for s in train + validation + test if s in files]
    if data_dir:
        return [s for s in train + validation + test if glue_file(data_dir, task, s).is_file()]
    return train + validation + test


def check_glue_sources(
    task_name: str | None, data_dir: str | None, files: list[str | None], predict_file: str | None = None
) -> None:
    """Classification data comes from a GLUE task (the hub, or data_dir in its layout) or from the user's files;
    a predict_file (read by `predict` alone) goes with either, or alone (a fine-tuned model's labels)."""
    if data_dir and not task_name:
        raise ConfigError("data_dir holds GLUE files; name the task with task_name.")
    if data_dir and any(files):
        raise ConfigError("Give either data_dir (GLUE layout) or train_file/validation_file/test_file, not both.")
    if not (task_name or any(files) or predict_file):
        raise ConfigError(
            "Give a data source: task_name (GLUE, hub or data_dir), train_file/validation_file or predict_file."
        )


def glue_identity(task: GlueTask, task_name: str, data_dir: str | None, split: str) -> list[Any]:
    """What a GLUE split is made from, for its cache key: the file in data_dir, or the hub id."""
    if data_dir:
        path = glue_file(data_dir, task, split)
        return ["glue_dir", task_name, file_identity(str(path)) if path.is_file() else None]
    return ["hub", "nyu-mll/glue", task_name]
