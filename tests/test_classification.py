"""Text classification end to end through the CLI: exact metrics on 1 and 3 processes, labels, predictions, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from reference import REPO, read_results, run_lit_hf
from runs import cpu_run, family_args
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import matthews_corrcoef
from test_glue import mnli_files
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lit_hf.cli import main
from lit_hf.data import TextClassificationDataModule
from lit_hf.data.glue import GLUE_TASKS, glue_file, read_glue_tsv


def cli_args(tmp_path: Path, model_dir: Path, *extra: str) -> list[str]:
    run = cpu_run(tmp_path / "runs", tmp_path / "cache")
    return [*family_args("text_classification", model_dir), *run, "--trainer.enable_model_summary=false", *extra]


def run(tmp_path: Path, command: str, model_dir: Path, *extra: str) -> Path:
    """Runs the CLI in this process; returns the run's log directory."""
    before = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*"))
    main([command, *cli_args(tmp_path, model_dir, *extra)])
    (new,) = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*")) - before
    return new


def run_ddp(tmp_path: Path, command: str, model_dir: Path, *extra: str) -> Path:
    """The CLI as a subprocess on 3 CPU processes (Lightning starts the other ranks by re-running the command)."""
    before = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*"))
    run_lit_hf(command, *cli_args(tmp_path, model_dir, "--trainer.devices=3", "--trainer.strategy=ddp", *extra))
    (new,) = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*")) - before
    return new


def predictions(model_dir: Path, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """Independent of lit_hf: transformers alone, one example at a time (no padding), logits (n, num_labels)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, pairs[i] if pairs else None, truncation=True, max_length=128, return_tensors="pt")
            out.append(model(**enc).logits[0].numpy())
    return np.stack(out)


def test_validate_on_three_processes_equals_one_and_sklearn(tmp_path, data_dir, classifier_dir):
    model_dir = classifier_dir("bert", 2)
    args = ["--data.task_name=cola", f"--data.data_dir={data_dir / 'glue'}", "--data.eval_batch_size=16"]
    args.append("--data.max_eval_samples=400")  # not a multiple of 3 either
    one = read_results(run(tmp_path, "validate", model_dir, *args))
    three = read_results(run_ddp(tmp_path, "validate", model_dir, *args))
    assert set(one) == {"val/loss", "val/matthews"}
    for key in one:
        assert three[key] == pytest.approx(one[key], abs=1e-6), key
    dev = read_glue_tsv(glue_file(str(data_dir / "glue"), GLUE_TASKS["cola"], "validation"), GLUE_TASKS["cola"], "")
    dev = dev.select(range(400))
    logits = predictions(model_dir, dev["sentence"])
    labels = np.array(dev["label"], dtype=int)
    reference = matthews_corrcoef(labels, logits.argmax(1))
    assert abs(reference) > 0.01  # the predictions vary, so the check means something
    assert one["val/matthews"] == pytest.approx(reference, abs=1e-6)
    loss = -torch.log_softmax(torch.from_numpy(logits).double(), -1)[torch.arange(len(labels)), labels].mean()
    assert one["val/loss"] == pytest.approx(float(loss), abs=1e-5)


def test_predict_on_three_processes_is_complete_and_in_order(tmp_path, classifier_dir):
    rows = [f"text number {i} " + "word " * (i % 7) for i in range(50)]  # 50: not a multiple of 3
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(rows)))
    (tmp_path / "test.csv").write_text("text\n" + "".join(f"{t}\n" for t in rows))
    args = [f"--data.train_file={tmp_path / 'train.csv'}", f"--data.predict_file={tmp_path / 'test.csv'}"]
    one = run(tmp_path, "predict", classifier_dir("bert", 2), *args, "--data.eval_batch_size=4")
    three = run_ddp(tmp_path, "predict", classifier_dir("bert", 2), *args, "--data.eval_batch_size=4")
    lines = (three / "predict_results.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == [
        str(i) for i in range(50)
    ]
    assert (three / "predict_results.txt").read_text() == (one / "predict_results.txt").read_text()
    probs = [json.loads(line) for line in (one / "predict_results.jsonl").read_text().splitlines()]
    expected = torch.from_numpy(predictions(classifier_dir("bert", 2), rows)).softmax(-1).numpy()
    assert [p["index"] for p in probs] == list(range(50))
    np.testing.assert_allclose([[p["probabilities"][k] for k in "ab"] for p in probs], expected, atol=1e-5)


def test_predict_reads_the_predict_file_else_the_test_split(tmp_path, classifier_dir):
    """--data.predict_file, as in every family: `predict` classifies its rows (labels ignored, max_predict_samples
    kept); without it, the test file's."""
    rows = {name: [f"{name} text {i} " + "word " * i for i in range(n)] for name, n in (("test", 4), ("mine", 7))}
    (tmp_path / "train.csv").write_text(
        "text,label\n" + "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(rows["test"]))
    )
    (tmp_path / "test.csv").write_text("text,label\n" + "".join(f"{t},a\n" for t in rows["test"]))
    (tmp_path / "mine.csv").write_text("text,label\n" + "".join(f"{t},unseen\n" for t in rows["mine"]))
    model_dir, files = classifier_dir("bert", 2), [f"--data.{s}_file={tmp_path / s}.csv" for s in ("train", "test")]
    for name, extra, n in (("mine", [f"--data.predict_file={tmp_path / 'mine.csv'}"], 5), ("test", [], 4)):
        log_dir = run(tmp_path, "predict", model_dir, *files, *extra, "--data.max_predict_samples=5")
        probs = [json.loads(line) for line in (log_dir / "predict_results.jsonl").read_text().splitlines()]
        expected = torch.from_numpy(predictions(model_dir, rows[name][:n])).softmax(-1).numpy()
        assert [p["index"] for p in probs] == list(range(n)), name
        np.testing.assert_allclose([[p["probabilities"][k] for k in "ab"] for p in probs], expected, atol=1e-5)


def test_mnli_two_validation_sets_and_two_prediction_files(tmp_path, classifier_dir):
    root = mnli_files(tmp_path / "glue_data")
    args = ["--data.task_name=mnli", f"--data.data_dir={root}", "--data.eval_batch_size=3"]
    got = read_results(run(tmp_path, "validate", classifier_dir("bert", 3), *args))
    assert set(got) == {f"val_{s}/{m}" for s in ("matched", "mismatched") for m in ("accuracy", "loss")}
    spec = GLUE_TASKS["mnli"]
    for name, split in (("matched", "validation_matched"), ("mismatched", "validation_mismatched")):
        dev = read_glue_tsv(glue_file(str(root), spec, split), spec, split)
        preds = predictions(classifier_dir("bert", 3), dev["premise"], dev["hypothesis"]).argmax(1)
        gold = [spec.labels.index(v) for v in dev["label"]]
        assert got[f"val_{name}/accuracy"] == pytest.approx(float(np.mean(preds == gold)), abs=1e-9)
    log_dir = run(tmp_path, "predict", classifier_dir("bert", 3), *args)
    for name, n in (("predict_results_mnli.txt", 7), ("predict_results_mnli-mm.txt", 5)):
        lines = (log_dir / name).read_text().splitlines()
        assert len(lines) == n + 1 and all(line.split("\t")[1] in spec.labels for line in lines[1:])


def test_stsb_regression_end_to_end(tmp_path, data_dir, classifier_dir):
    args = ["--data.task_name=stsb", f"--data.data_dir={data_dir / 'glue'}", "--data.batch_size=4"]
    run(tmp_path, "fit", classifier_dir("bert"), *args, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1")
    (ckpt,) = (tmp_path / "runs" / "lightning_logs").glob("*/version_0/checkpoints/*.ckpt")
    got = read_results(run(tmp_path, "validate", classifier_dir("bert"), *args, f"--ckpt_path={ckpt}"))
    assert set(got) == {"val/loss", "val/pearson", "val/spearman", "val/combined_score"}
    assert got["val/combined_score"] == pytest.approx((got["val/pearson"] + got["val/spearman"]) / 2, abs=1e-9)
    head = classifier_dir("bert", 1)  # a regression checkpoint, checked against scipy on independent predictions
    got = read_results(run(tmp_path, "validate", head, *args))
    dev = read_glue_tsv(glue_file(str(data_dir / "glue"), GLUE_TASKS["stsb"], "validation"), GLUE_TASKS["stsb"], "")
    scores = predictions(head, dev["sentence1"], dev["sentence2"])[:, 0]
    gold = np.array(dev["label"], dtype=float)
    assert got["val/pearson"] == pytest.approx(pearsonr(scores, gold)[0], abs=1e-6)
    assert got["val/spearman"] == pytest.approx(spearmanr(scores, gold)[0], abs=1e-6)
    assert got["val/loss"] == pytest.approx(float(np.mean((scores - gold) ** 2)), abs=1e-5)


def test_gpt2_classifies_at_batch_size_four(tmp_path, data_dir, classifier_dir):
    args = ["--data.task_name=rte", f"--data.data_dir={data_dir / 'glue'}", "--data.max_eval_samples=20"]
    model_dir = classifier_dir("gpt2")  # GPT-2's tokenizer has no pad token
    batched = read_results(run(tmp_path, "validate", model_dir, *args, "--data.eval_batch_size=4"))
    single = read_results(run(tmp_path, "validate", model_dir, *args, "--data.eval_batch_size=1"))
    assert batched["val/accuracy"] == single["val/accuracy"]
    assert batched["val/loss"] == pytest.approx(single["val/loss"], abs=1e-5)  # padding changes nothing


def separable(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    words = {"positive": ["good", "great", "fine", "nice"], "negative": ["bad", "awful", "poor", "sad"]}
    filler = ["the", "movie", "was", "quite", "and", "plot", "it", "really"]
    rows = []
    for i in range(n):
        label = ["negative", "positive"][i % 2]
        text = list(rng.choice(filler, 2)) + list(rng.choice(words[label], 3))
        rng.shuffle(text)
        rows.append((" ".join(text), label))
    return rows


def test_user_files_with_string_labels_learn_a_separable_task(tmp_path, classifier_dir):
    train, val = separable(160, 0), separable(40, 1)
    (tmp_path / "train.csv").write_text("review,sentiment\n" + "".join(f"{t},{lab}\n" for t, lab in train))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"review": t, "sentiment": lab}) + "\n" for t, lab in val))
    data = [f"--data.train_file={tmp_path / 'train.csv'}", f"--data.validation_file={tmp_path / 'val.jsonl'}"]
    data += ["--data.text_column=review", "--data.label_column=sentiment", "--data.batch_size=16"]
    dm = TextClassificationDataModule(model_name_or_path="unused", train_file=str(tmp_path / "train.csv"),
                                      label_column="sentiment", text_column="review")  # fmt: skip
    assert dm.label_names == ["negative", "positive"] and dm.regression is False
    before = read_results(run(tmp_path, "validate", classifier_dir("bert"), *data))
    run(tmp_path, "fit", classifier_dir("bert"), *data, "--model.optim.learning_rate=3e-3", "--trainer.max_epochs=5")
    (ckpt,) = (tmp_path / "runs" / "lightning_logs").glob("*/version_1/checkpoints/*.ckpt")
    after = read_results(run(tmp_path, "validate", classifier_dir("bert"), *data, f"--ckpt_path={ckpt}"))
    assert after["val/accuracy"] >= 0.9 and after["val/loss"] < before["val/loss"] / 2


def test_label_order_of_a_fine_tuned_checkpoint_is_kept(tmp_path, data_dir, classifier_dir):
    """A checkpoint with the same labels in another order keeps its order, as run_glue does."""
    from lit_hf.tasks import SequenceClassificationTask

    model_dir = tmp_path / "flipped"
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir("bert", 2))
    model.config.id2label = {0: "NOT_ENTAILMENT", 1: "ENTAILMENT"}
    model.config.label2id = {"NOT_ENTAILMENT": 0, "ENTAILMENT": 1}
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(classifier_dir("bert", 2)).save_pretrained(model_dir)
    task = SequenceClassificationTask(str(model_dir), label_names=["entailment", "not_entailment"], glue_task="rte")
    task.eval()  # tasks start in train mode (dropout on) for fit; two forwards must see the same weights only
    assert task.model_ids.tolist() == [1, 0]
    batch = AutoTokenizer.from_pretrained(model_dir)(["a b", "c d e"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = task(**batch, labels=torch.tensor([0, 1]))
        loss, logits = out.loss, out.logits
        raw = task.model(**batch).logits
    assert torch.equal(logits, raw[:, [1, 0]])
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(raw, torch.tensor([1, 0]))))


@pytest.mark.parametrize("case", ["label_count", "missing_column", "unreadable_file", "unknown_task"])
def test_errors_exit_with_one_line(tmp_path, data_dir, classifier_dir, capsys, case):
    (tmp_path / "t.csv").write_text("body,label\nhello,a\nworld,b\n")
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file")
    model_dir, args, message = classifier_dir("bert", 2), [], ""
    if case == "label_count":
        args, message = ["--data.task_name=mnli", f"--data.data_dir={mnli_files(tmp_path)}"], "has 2 outputs"
    elif case == "missing_column":
        args, message = [f"--data.validation_file={tmp_path / 't.csv'}"], "no column 'text'"
    elif case == "unreadable_file":
        args, message = [f"--data.validation_file={tmp_path / 'bad.parquet'}"], "could not be read as parquet"
    else:
        args, message = ["--data.task_name=glue"], "task_name"
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *cli_args(tmp_path, model_dir, *args)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_offline_quickstart_runs_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config names its files relative to itself, so any working directory works
    main([
        "fit", f"--config={REPO / 'configs/quickstart_classification.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
        "--trainer.val_check_interval=1.0", f"--data.data_cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    assert list(tmp_path.rglob("huggingface/config.json"))
    (saved,) = tmp_path.rglob("config.yaml")  # the run's record names the files wherever it is read from
    train_file = yaml.safe_load(saved.read_text())["data"]["init_args"]["train_file"]
    assert train_file == str(REPO / "configs/quickstart/reviews/train.csv")


@pytest.mark.parametrize("kind", ["gpt2", "opt", "bloom"])
def test_decoder_only_heads_pad_with_eos(causal_lm_dir, kind):
    """A batch padded with EOS gives each text the logits it gets alone (the head reads the last real token)."""
    from lit_hf.tasks import SequenceClassificationTask

    task = SequenceClassificationTask(str(causal_lm_dir(kind)), label_names=["no", "yes"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(causal_lm_dir(kind))
    assert tokenizer.pad_token is None and task.model.config.pad_token_id == tokenizer.eos_token_id
    tokenizer.pad_token = tokenizer.eos_token  # what the data module does
    texts = ["one", "two words here", "three and more words", "four"]
    with torch.no_grad():
        batched = task(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = torch.cat([task(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    assert batched.shape == (4, 2)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_new_head_on_a_checkpoint_of_another_size(classifier_dir):
    from lit_hf.tasks import SequenceClassificationTask

    labels = ["entailment", "neutral", "contradiction"]
    task = SequenceClassificationTask(str(classifier_dir("bert", 2)), label_names=labels, ignore_mismatched_sizes=True)
    assert task.model.config.num_labels == 3 and task.model.classifier.weight.shape[0] == 3
    assert task.model.config.id2label == dict(enumerate(labels))


def test_pretrained_model_fine_tunes_in_train_mode(classifier_dir):
    """from_pretrained returns eval mode and Lightning keeps module modes at fit start: dropout must be on."""
    from lit_hf.tasks import SequenceClassificationTask

    task = SequenceClassificationTask(str(classifier_dir("bert", 2)), label_names=["a", "b"])
    assert all(module.training for module in task.model.modules())
