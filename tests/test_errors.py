"""The bad-input matrix: each mistake ends in one `lit_hf: error: ...` line and exit status 2, with no traceback and
nothing written (the earlier run's files byte-identical, no new `version_N/`). Cases already tested elsewhere:
missing file, missing column, empty .txt split, block size above the model's positions and the unreachable hub
(test_cli.py), label count against a checkpoint's head, unreadable parquet and an unknown GLUE name
(test_classification.py), languages absent from the data and max_source_length (test_translation.py)."""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_hf.cli import main
from lit_hf.tasks import CausalLMTask

CLM = ["--model=lit_hf.tasks.CausalLMTask", "--data=lit_hf.data.LanguageModelingDataModule"]
CLS = ["--model=lit_hf.tasks.SequenceClassificationTask", "--data=lit_hf.data.TextClassificationDataModule"]
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def common(root: Path, model_dir: Path) -> list[str]:
    return [
        f"--model.model_name_or_path={model_dir}",
        f"--data.data_cache_dir={root / 'cache'}",
        f"--trainer.default_root_dir={root / 'runs'}",
        *QUIET,
    ]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, causal_lm_dir) -> Path:  # noqa: ANN001
    """A finished tiny `fit` (checkpoint, results.json, huggingface/) and the bad input files of the matrix."""
    root = tmp_path_factory.mktemp("errors")
    (root / "text.txt").write_text((data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8")[:3000])
    main(["fit", *CLM, *common(root, causal_lm_dir()), f"--data.train_file={root / 'text.txt'}",
          f"--data.validation_file={root / 'text.txt'}", "--data.block_size=32", "--data.batch_size=2",
          "--data.max_train_samples=4", "--data.max_eval_samples=2", "--trainer.max_epochs=1"])  # fmt: skip
    (root / "empty.jsonl").write_text("")
    (root / "latin1.txt").write_bytes("first line\nna\xefve caf\xe9\n".encode("latin-1"))
    (root / "broken.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"\n{"text": "four"}\n')
    (root / "a_dir").mkdir()
    (root / "train.csv").write_text("text,label\nhello there,a\nhow are you,b\n")
    (root / "unseen.csv").write_text("text,label\nhello,a\nbye,c\n")
    (ckpt,) = (root / "runs").rglob("*.ckpt")
    (root / "truncated.ckpt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    torch.save({"state_dict": {}, "hyper_parameters": {"x": argparse.Namespace(a=1)}}, root / "unsafe.ckpt")
    return root


def checkpoint(root: Path) -> Path:
    return next(p for p in (root / "runs").rglob("*.ckpt") if "truncated" not in p.name)


V = "--data.validation_file=TEXT"
CASES = {
    "misspelt-key": (["validate", *CLM, V, "--data.batch_sze=2"], ["did you mean batch_size"]),
    "misspelt-key-in-config": (
        ["validate", *CLM, V, "--config=BAD_YAML"],
        ["--trainer.max_epoch", "did you mean --trainer.max_epochs"],
    ),
    "wrong-type": (["validate", *CLM, V, "--data.batch_size=two"], ["--data.batch_size", "expected int", "'two'"]),
    "unknown-class": (
        ["validate", "--model=lit_hf.tasks.CausalLM", CLM[1], V],
        ["lit_hf.tasks.CausalLM", "did you mean lit_hf.tasks.CausalLMTask"],
    ),
    "unknown-glue-task": (["validate", *CLS, "--data.task_name=colaa"], ["'colaa'", "did you mean cola"]),
    "directory-as-file": (["validate", *CLM, "--data.validation_file=A_DIR"], ["validation_file", "is a directory"]),
    "empty-json-file": (["validate", *CLM, "--data.validation_file=EMPTY_JSONL"], ["empty.jsonl", "is empty"]),
    "not-utf8": (["validate", *CLM, "--data.validation_file=LATIN1"], ["latin1.txt", "line 2 is not UTF-8"]),
    "malformed-jsonl-line": (
        ["validate", *CLM, "--data.validation_file=BROKEN_JSONL"],
        ["broken.jsonl", "line 3 is not valid JSON"],
    ),
    "unseen-validation-label": (
        ["fit", *CLS, "--data.train_file=TRAIN_CSV", "--data.validation_file=UNSEEN_CSV"],
        ["validation split has labels ['c']", "training file"],
    ),
    "empty-after-max-samples": (
        ["fit", *CLM, "--data.train_file=TEXT", "--data.max_train_samples=0", "--data.validation_split_percentage=0"],
        ["train split is empty", "max_*_samples"],
    ),
    "ckpt-missing": (["validate", *CLM, V, "--ckpt_path=NOWHERE"], ["--ckpt_path", "does not exist"]),
    "ckpt-directory": (["validate", *CLM, V, "--ckpt_path=A_DIR"], ["is a directory"]),
    "ckpt-truncated": (["validate", *CLM, V, "--ckpt_path=TRUNCATED"], ["truncated.ckpt", "not a complete checkpoint"]),
    "ckpt-other-task": (
        ["validate", *CLS, "--data.validation_file=TRAIN_CSV", "--ckpt_path=CKPT"],
        ["checkpoint of lit_hf.tasks.CausalLMTask", "--model is lit_hf.tasks.SequenceClassificationTask"],
    ),
    "ckpt-unsafe-objects": (["validate", *CLM, V, "--ckpt_path=UNSAFE"], ["holds Python objects", "weights_only"]),
    "more-devices-than-cores": (
        ["validate", *CLM, V, "--trainer.devices=MANY"],
        [f"more than this machine's {os.cpu_count()} CPU cores (os.cpu_count()) can run"],
    ),
    "predict-without-test-split": (
        ["predict", *CLS, "--data.train_file=TRAIN_CSV"],
        ["no test split (it has: train)", "--data.test_file"],
    ),
    "predict-without-predict-step": (
        ["predict", *CLM, V, "--model=test_errors.NoPredictTask"],
        ["NoPredictTask has nothing to predict", "validate"],
    ),
}


class NoPredictTask(CausalLMTask):
    """A task without its own predict_step (every lit_hf family has one now): what `predict` says for such a task."""

    predict_step = L.LightningModule.predict_step


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under the runs folder."""
    runs = root / "runs"
    return {str(p.relative_to(runs)): p.read_bytes() if p.is_file() else None for p in sorted(runs.rglob("*"))}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_writes_nothing(earlier_run, causal_lm_dir, capsys, case) -> None:  # noqa: ANN001
    root = earlier_run
    (root / "bad.yaml").write_text("trainer:\n  max_epoch: 3\n")
    swap = {
        "TEXT": root / "text.txt", "EMPTY_JSONL": root / "empty.jsonl", "LATIN1": root / "latin1.txt",
        "BROKEN_JSONL": root / "broken.jsonl", "A_DIR": root / "a_dir", "TRAIN_CSV": root / "train.csv",
        "UNSEEN_CSV": root / "unseen.csv", "NOWHERE": root / "nowhere.ckpt", "TRUNCATED": root / "truncated.ckpt",
        "UNSAFE": root / "unsafe.ckpt",
        "CKPT": checkpoint(root), "BAD_YAML": root / "bad.yaml", "MANY": 2 * (os.cpu_count() or 1) + 1,
    }  # fmt: skip
    args, needles = CASES[case]
    args = [
        a.split("=")[0] + "=" + str(swap.get(a.split("=", 1)[1], a.split("=", 1)[1])) if "=" in a else a for a in args
    ]
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *common(root, causal_lm_dir())])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(root) == before


def test_checkpoints_load_weights_only(earlier_run) -> None:  # noqa: ANN001
    """A lit_hf checkpoint holds tensors and plain values only: `torch.load(weights_only=True)` reads it whole."""
    loaded = torch.load(checkpoint(earlier_run), weights_only=True, map_location="cpu")
    assert loaded["hyper_parameters"]["_class_path"] == "lit_hf.tasks.CausalLMTask"
    assert all(isinstance(v, torch.Tensor) for v in loaded["state_dict"].values())


def test_export_is_safetensors_and_remote_code_stays_off(earlier_run) -> None:  # noqa: ANN001
    (export,) = (earlier_run / "runs").rglob("huggingface")
    assert (export / "model.safetensors").is_file() and not list(export.glob("*.bin"))
    saved = torch.load(checkpoint(earlier_run), weights_only=True, map_location="cpu")
    assert saved["hyper_parameters"]["hub"]["trust_remote_code"] is False  # the task's and, linked, the data module's
    assert saved["datamodule_hyper_parameters"]["hub"]["trust_remote_code"] is False
    cached = [p for p in (earlier_run / "cache" / "lit_hf").rglob("*") if p.is_file()]
    assert cached and {p.suffix for p in cached} == {".arrow", ".json"}  # Arrow tables and JSON metadata only


def test_more_gpus_than_the_machine_has(monkeypatch) -> None:  # noqa: ANN001
    from lit_hf.checks import check_devices
    from lit_hf.errors import LitHFError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices("gpu", 2)
    with pytest.raises(LitHFError, match="--trainer.devices=3 asks for more devices than this machine's 2 GPUs"):
        check_devices("gpu", 3)


def test_stale_temporary_folders_are_removed(tmp_path: Path) -> None:
    """Leftovers of a killed writer (a pid that no longer runs) go at the next successful write; a live one stays."""
    from lit_hf.atomic import replaced, temporary_name

    target = tmp_path / "out"
    dead = temporary_name(target).with_name(temporary_name(target).name.rsplit("-", 1)[0] + "-999999999")
    live = temporary_name(target).with_name(temporary_name(target).name.rsplit("-", 1)[0] + f"-{os.getppid()}")
    for folder in (dead, live):
        folder.mkdir()
    with replaced(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("done")
    assert (target / "a").read_text() == "done"
    assert not dead.exists() and live.exists()
    shutil.rmtree(live)


@pytest.mark.slow
def test_evaluation_set_smaller_than_the_processes(earlier_run, causal_lm_dir, tmp_path) -> None:  # noqa: ANN001
    """Two processes, one block: one line from the two processes, status 2, and no `version_N/` left."""
    (tmp_path / "v.txt").write_text((earlier_run / "text.txt").read_text()[:400])
    args = [
        "validate", *CLM, f"--data.validation_file={tmp_path / 'v.txt'}", "--data.block_size=64",
        "--data.max_eval_samples=1", "--trainer.devices=2", "--trainer.strategy=ddp",
        *common(tmp_path, causal_lm_dir()),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lit_hf", *args], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("lit_hf: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines == [
        "lit_hf: error: The evaluation set has 1 examples, fewer than the 2 processes; "
        "use fewer devices or more evaluation data."
    ]
    assert not (tmp_path / "runs").exists()


def test_classification_longer_than_the_model_truncates_with_a_notice(earlier_run, classifier_dir, tmp_path) -> None:  # noqa: ANN001
    """As run_glue.py: max_seq_length above the model's 128 positions truncates to 128 and says so."""
    from lit_hf.data import TextClassificationDataModule

    model_dir = str(classifier_dir("bert", None))
    data = TextClassificationDataModule(
        model_dir, train_file=str(earlier_run / "train.csv"), max_seq_length=4096,
        data_cache_dir=str(tmp_path),
    )  # fmt: skip
    with pytest.warns(
        UserWarning, match="max_seq_length 4096 is more than the model takes; texts are truncated to 128"
    ):
        data.prepare_data()
