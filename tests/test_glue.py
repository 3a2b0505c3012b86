"""GLUE layouts as GLUE ships them, the data module's labels and tokens, and the metrics against sklearn/scipy."""

import csv
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lit_hf.data import TextClassificationDataModule
from lit_hf.data.glue import GLUE_TASKS, glue_file, read_glue_tsv
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.options import HubOptions
from lit_hf.tasks.text_classification import make_metric

# Row counts and label counts from ../shared/data/SOURCES.md.
LAYOUTS = [
    ("cola", "train", 7250, None),
    ("cola", "validation", 1043, {"1": 721, "0": 322}),
    ("mrpc", "validation", 6, None),
    ("stsb", "train", 9, None),
    ("stsb", "validation", 9, None),
    ("rte", "train", 2127, None),
    ("rte", "validation", 277, {"entailment": 146, "not_entailment": 131}),
    ("wnli", "train", 565, None),
    ("wnli", "validation", 71, {"0": 40, "1": 31}),
    ("qnli", "validation", 5463, {"entailment": 2702, "not_entailment": 2761}),
]


def mnli_files(root: Path) -> Path:
    """Small files in MNLI's layout: 12 columns in train, 16 in dev (five annotator labels), 10 in test."""
    folder = root / "MNLI"
    folder.mkdir(parents=True, exist_ok=True)
    parses = ["( a )", "( b )", "(ROOT a)", "(ROOT b)"]
    labels = ["entailment", "neutral", "contradiction"]
    head = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse"]
    head += ["sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]

    def write(name: str, extra_head: list[str], n: int, genre: str, labelled: bool = True) -> None:
        rows = ["\t".join(head + extra_head)]
        for i in range(n):
            label = labels[i % 3]
            premise = f'the "{genre}" cat {i} sat'  # a stray quote, as MNLI has
            extra = [label] * (len(extra_head) - 1) + [label] if labelled else []
            rows.append("\t".join([str(i), str(i), f"{i}e", genre, *parses, premise, f"{label} {i}", *extra]))
        (folder / name).write_text("\n".join(rows) + "\n")

    write("train.tsv", ["label1", "gold_label"], 30, "fiction")
    write("dev_matched.tsv", [f"label{i}" for i in range(1, 6)] + ["gold_label"], 10, "fiction")
    write("dev_mismatched.tsv", [f"label{i}" for i in range(1, 6)] + ["gold_label"], 8, "letters")
    write("test_matched.tsv", [], 7, "fiction", labelled=False)
    write("test_mismatched.tsv", [], 5, "letters", labelled=False)
    return root


@pytest.mark.parametrize(("task", "split", "rows", "labels"), LAYOUTS)
def test_original_layouts(data_dir, task, split, rows, labels):
    spec = GLUE_TASKS[task]
    data = read_glue_tsv(glue_file(str(data_dir / "glue"), spec, split), spec, split)
    assert len(data) == rows
    assert set(data.column_names) == {spec.text, spec.pair, "label"} - {None}
    assert all(isinstance(t, str) and t.strip() for t in data[spec.text])
    if labels:
        assert Counter(data["label"]) == labels


def test_first_rows_match_the_files(data_dir):
    glue = str(data_dir / "glue")
    cola = read_glue_tsv(glue_file(glue, GLUE_TASKS["cola"], "validation"), GLUE_TASKS["cola"], "validation")
    assert cola[0] == {"sentence": "The sailors rode the breeze clear of the rocks.", "label": "1"}
    stsb = read_glue_tsv(glue_file(glue, GLUE_TASKS["stsb"], "validation"), GLUE_TASKS["stsb"], "validation")
    assert stsb[0]["sentence2"] == "A man wearing a hard hat is dancing." and stsb[1]["label"] == "4.750"
    qnli = read_glue_tsv(glue_file(glue, GLUE_TASKS["qnli"], "validation"), GLUE_TASKS["qnli"], "validation")
    assert qnli[0]["question"] == "What came into force after the new constitution was herald?"


def test_mrpc_with_bom_and_quotes_equals_its_csv_copy(data_dir):
    """The TSV (byte-order mark, unbalanced quotes) read with no quote handling equals the quoted CSV copy."""
    spec = GLUE_TASKS["mrpc"]
    tsv = read_glue_tsv(data_dir / "glue/MRPC/train.tsv", spec, "train")
    with open(data_dir / "glue/MRPC/train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tsv["sentence1"] == [r["sentence1"] for r in rows]
    assert tsv["sentence2"] == [r["sentence2"] for r in rows]
    assert [spec.labels[int(v)] for v in tsv["label"]] == [r["label"] for r in rows]
    assert tsv["sentence2"][0].startswith('" The foodservice')


def test_mnli_layout(tmp_path):
    root = mnli_files(tmp_path / "glue_data")
    spec = GLUE_TASKS["mnli"]
    matched = read_glue_tsv(glue_file(str(root), spec, "validation_matched"), spec, "validation_matched")
    mismatched = read_glue_tsv(
        glue_file(str(root / "MNLI"), spec, "validation_mismatched"), spec, "validation_mismatched"
    )
    test = read_glue_tsv(glue_file(str(root), spec, "test_mismatched"), spec, "test_mismatched")
    assert (len(matched), len(mismatched), len(test)) == (10, 8, 5)
    assert matched[1] == {"premise": 'the "fiction" cat 1 sat', "hypothesis": "neutral 1", "label": "neutral"}
    assert set(test.column_names) == {"premise", "hypothesis"}


def test_data_module_labels_and_tokens(tmp_path, data_dir, bert_tokenizer, classifier_dir):
    dm = TextClassificationDataModule(
        hub=HubOptions(tokenizer_name=str(classifier_dir("bert"))),
        task_name="rte",
        data_dir=str(data_dir / "glue"),
        data_cache_dir=str(tmp_path),
        max_seq_length=64,
    )
    assert dm.label_names == ["entailment", "not_entailment"] and dm.regression is False
    dm.prepare_data()
    dm.setup("validate")
    val = dm.datasets["validation"]
    raw = read_glue_tsv(data_dir / "glue/RTE/dev.tsv", GLUE_TASKS["rte"], "validation")
    assert val["labels"] == [dm.label_names.index(v) for v in raw["label"]]
    expected = bert_tokenizer(raw[0]["sentence1"], raw[0]["sentence2"], truncation=True, max_length=64)["input_ids"]
    assert val[0]["input_ids"] == expected
    assert max(len(ids) for ids in val["input_ids"]) == 64
    batch = next(iter(dm.val_dataloader()[0]))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padded to the longest only


def test_stsb_is_regression_with_float_labels(tmp_path, data_dir, classifier_dir):
    dm = TextClassificationDataModule(
        hub=HubOptions(tokenizer_name=str(classifier_dir("bert"))),
        task_name="stsb",
        data_dir=str(data_dir / "glue"),
        data_cache_dir=str(tmp_path),
    )
    assert dm.label_names is None and dm.regression is True
    dm.prepare_data()
    dm.setup("validate")
    assert dm.datasets["validation"]["labels"][:2] == [5.0, 4.75]


def test_length_grouped_batches_pad_less(tmp_path, data_dir, classifier_dir):
    kwargs = {"hub": HubOptions(tokenizer_name=str(classifier_dir("bert"))), "task_name": "cola", "batch_size": 32}
    padding = {}
    for group in (False, True):
        dm = TextClassificationDataModule(
            data_dir=str(data_dir / "glue"), data_cache_dir=str(tmp_path), group_by_length=group, **kwargs
        )
        dm.prepare_data()
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        assert sum(len(b["labels"]) for b in batches) == 7250 // 32 * 32  # whole steps only: 18 left out per epoch
        padding[group] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert padding[True] < padding[False] / 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task_name": "glue"}, ConfigError, "Unknown task_name 'glue'"),
        ({"data_dir": "x"}, ConfigError, "task_name"),
        ({}, ConfigError, "data source"),
        ({"task_name": "rte", "data_dir": "x", "train_file": "t.csv"}, ConfigError, "not both"),
    ],
)
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        TextClassificationDataModule(model_name_or_path="x", **kwargs)


def test_unreadable_and_missing_glue_files(tmp_path, classifier_dir):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes(
        b"index\tsentence1\tsentence2\tlabel\n0\t\xff\xfe\x00bad\tx\tentailment\n"
    )
    dm = TextClassificationDataModule(
        hub=HubOptions(tokenizer_name=str(classifier_dir("bert"))),
        task_name="rte",
        data_dir=str(tmp_path),
        data_cache_dir=str(tmp_path / "cache"),
    )
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="validate"))  # what Trainer.validate sets
    with pytest.raises(LitHFError, match="Could not read the GLUE file"):
        dm.prepare_data()
    (tmp_path / "RTE" / "dev.tsv").unlink()
    with pytest.raises(LitHFError, match="dev.tsv' does not exist"):
        dm.prepare_data()


# Predictions and targets split into uneven batches, as processes would see them.
def batches(*arrays: np.ndarray, sizes=(7, 30, 13)):
    start = 0
    for size in sizes:
        yield [torch.as_tensor(a[start : start + size]) for a in arrays]
        start += size


@pytest.mark.parametrize("name", ["accuracy", "f1", "matthews"])
def test_classification_metrics_equal_sklearn(name):
    rng = np.random.default_rng(0)
    preds, target = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    metric = make_metric(name, 2)
    for p, t in batches(preds, target):
        metric.update(p, t)
    reference = {"accuracy": accuracy_score, "f1": f1_score, "matthews": matthews_corrcoef}[name](target, preds)
    assert float(metric.compute()) == pytest.approx(reference, abs=1e-9)


def test_three_class_accuracy_and_regression_metrics_equal_scipy():
    rng = np.random.default_rng(1)
    preds, target = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    accuracy = make_metric("accuracy", 3)
    for p, t in batches(preds, target):
        accuracy.update(p, t)
    assert float(accuracy.compute()) == pytest.approx(accuracy_score(target, preds), abs=1e-12)
    scores = np.round(rng.uniform(0, 5, 50), 1)  # rounded: ties, which Spearman ranks as averages
    gold = np.round(scores + rng.normal(0, 1, 50), 2)
    for name, reference in (("pearson", pearsonr), ("spearman", spearmanr)):
        metric = make_metric(name, 1)
        for p, t in batches(scores, gold):
            metric.update(p, t)
        assert float(metric.compute()) == pytest.approx(reference(scores, gold)[0], abs=1e-9)


def hub_glue(task: str) -> DatasetDict:
    """What `load_dataset("nyu-mll/glue", task)` returns: hub column names, ClassLabel ids, -1 on test."""
    rows = {"premise": ["a cat sat", "dogs run fast", "it rains"], "hypothesis": ["a cat", "dogs sleep", "wet"]}
    splits = {"validation_matched": [0, 2, 1], "validation_mismatched": [1, 1, 0]}
    splits |= {"test_matched": [-1] * 3, "test_mismatched": [-1] * 3}
    if task == "ax":
        splits = {"test": [-1] * 3}
    return DatasetDict(
        {s: Dataset.from_dict({**rows, "label": labels, "idx": [0, 1, 2]}) for s, labels in splits.items()}
    )


def test_hub_source_keeps_ids_and_drops_the_test_placeholder(tmp_path, classifier_dir, monkeypatch):
    import lit_hf.data.glue as tc

    for task in ("mnli", "ax"):
        monkeypatch.setattr(tc, "load_hub", lambda name, config, revision, cache, task=task: hub_glue(task))
        dm = TextClassificationDataModule(
            hub=HubOptions(tokenizer_name=str(classifier_dir("bert"))),
            task_name=task,
            data_cache_dir=str(tmp_path / task),
        )
        assert dm.label_names == ["entailment", "neutral", "contradiction"]
        stages = {"mnli": ("validate", "predict"), "ax": ("predict",)}[task]
        for stage in stages:
            dm.trainer = SimpleNamespace(state=SimpleNamespace(fn=stage))
            dm.prepare_data()
            dm.setup(stage)
        if task == "mnli":
            assert dm.datasets["validation_matched"]["labels"] == [0, 2, 1]
            assert len(dm.val_dataloader()) == 2
        test = dm.datasets["test_matched" if task == "mnli" else "test"]
        assert "labels" not in test.column_names and test["index"] == [0, 1, 2]


def test_pad_to_max_length_and_the_diagnostic_layout(tmp_path, classifier_dir):
    (tmp_path / "diagnostic").mkdir()
    (tmp_path / "diagnostic" / "diagnostic.tsv").write_text("index\tsentence1\tsentence2\n0\tA b.\tC.\n1\tD e f.\tG.\n")
    dm = TextClassificationDataModule(
        hub=HubOptions(tokenizer_name=str(classifier_dir("bert"))), task_name="ax", data_dir=str(tmp_path),
        data_cache_dir=str(tmp_path / "cache"), max_seq_length=16, pad_to_max_length=True,
    )  # fmt: skip
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="predict"), precision="32-true")
    dm.prepare_data()
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()[0]))
    assert batch["input_ids"].shape == (2, 16) and batch["index"].tolist() == [0, 1]
