"""GLUE facts shared by data and tasks: each task's columns, labels, metrics and evaluation sets."""

from dataclasses import dataclass, field
from typing import Literal

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
