"""The bad-input matrix: each mistake ends in one `lit_hf: error: ...` line and exit status 2, with no traceback and
nothing written (the earlier run's files byte-identical, no new `version_N/`). Cases already tested elsewhere:
missing file, missing column, empty .txt split, block size above the model's positions and the unreachable hub
(test_cli.py), label count against a checkpoint's head, unreadable parquet and an unknown GLUE name
(test_classification.py), languages absent from the data and max_source_length (test_translation.py)."""

import argparse
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from runs import family_args
from transformers import GPT2Config, GPT2LMHeadModel

from lit_hf.cli import main
from lit_hf.tasks import CausalLMTask

REPO = Path(__file__).resolve().parents[1]
# A folder of raw vocabulary files (BERT's vocab.txt alone), which AutoTokenizer cannot read (conftest's data_dir).
RAW_VOCAB = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared/data")) / "tokenizers/bert-base-uncased"

CLM = family_args("causal_lm")
CLS = family_args("text_classification")
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def common(root: Path, model_dir: Path) -> list[str]:
    return [
        f"--model.model_name_or_path={model_dir}",
        f"--data.data_cache_dir={root / 'cache'}",
        f"--trainer.default_root_dir={root / 'runs'}",
        *QUIET,
    ]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, causal_lm_dir, gpt2_tokenizer) -> Path:
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
    cut = root / "cut" / "lightning_logs" / f"causal_lm-{causal_lm_dir().name}" / "version_0" / "checkpoints"
    cut.mkdir(parents=True)  # a fit killed mid-copy
    shutil.copy(root / "truncated.ckpt", cut / "last.ckpt")
    (root / "older" / "lightning_logs" / "version_0" / "checkpoints").mkdir(parents=True)  # before runs were named
    shutil.copy(ckpt, root / "older" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"x": argparse.Namespace(a=1)}}, root / "unsafe.ckpt")
    (root / "empty.yaml").write_text("# nothing set here\n")
    (root / "tab.yaml").write_text("trainer:\n\tmax_epochs: 3\n")
    (root / "list.yaml").write_text("- trainer\n- model\n")
    torch.manual_seed(0)  # the same vocabulary and layers, half the width
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(root / "narrow-gpt2")
    gpt2_tokenizer.save_pretrained(root / "narrow-gpt2")
    from transformers import BertTokenizer  # transformers 5: a full vocab.txt, 5 tokens in the tokenizer it builds

    BertTokenizer(vocab_file=str(RAW_VOCAB / "vocab.txt")).save_pretrained(root / "five-tokens")
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
    "max-samples-zero": (
        ["fit", *CLM, "--data.train_file=TEXT", "--data.max_train_samples=0", "--data.validation_split_percentage=0"],
        ["max_train_samples must be positive, got 0"],
    ),
    "raw-tokenizer-files": (  # transformers' whole message, not its first line ending in "one of: "
        ["validate", *CLM, V, "--model.hub.tokenizer_name=RAW_VOCAB"],
        ["bert-base-uncased", "(3) an equivalent slow tokenizer class", "docs/from-hf-scripts.md"],
    ),
    "absurdly-small-tokenizer": (
        ["validate", *CLM, V, "--model.hub.tokenizer_name=FIVE_TOKENS"],
        ["five-tokens' has 5 tokens for a model with 50257 embeddings", "docs/from-hf-scripts.md"],
    ),
    "ckpt-missing": (["validate", *CLM, V, "--ckpt_path=NOWHERE"], ["--ckpt_path", "does not exist"]),
    "ckpt-directory": (["validate", *CLM, V, "--ckpt_path=A_DIR"], ["is a directory"]),
    "ckpt-truncated": (["validate", *CLM, V, "--ckpt_path=TRUNCATED"], ["truncated.ckpt", "not a complete checkpoint"]),
    "ckpt-other-task": (
        ["validate", *CLS, "--data.validation_file=TRAIN_CSV", "--ckpt_path=CKPT"],
        ["checkpoint of lit_hf.tasks.CausalLMTask", "--model is lit_hf.tasks.SequenceClassificationTask"],
    ),
    "data-of-another-family": (
        ["validate", "--model=lit_hf.tasks.CausalLMTask", CLS[1], "--data.validation_file=TRAIN_CSV"],
        ["--data=TextClassificationDataModule is a text_classification data module", "the task's family"],
    ),
    "ckpt-unsafe-objects": (["validate", *CLM, V, "--ckpt_path=UNSAFE"], ["holds Python objects", "weights_only"]),
    "more-devices-than-cores": (
        ["validate", *CLM, V, "--trainer.devices=MANY"],
        [f"more than this machine's {os.cpu_count()} CPU cores (os.cpu_count()) can run"],
    ),
    "predict-without-test-split": (
        ["predict", *CLS, "--data.train_file=TRAIN_CSV"],
        ["no test split (it has: train)", "--data.predict_file"],
    ),
    "predict-without-glue-test-file": (  # the GLUE download's RTE without test.tsv
        ["predict", *CLS, "--data.task_name=rte", f"--data.data_dir={RAW_VOCAB.parents[1] / 'glue'}"],
        ["RTE/test.tsv' does not exist", "--data.predict_file"],
    ),
    "predict-without-predict-step": (
        ["predict", *CLM, V, "--model=test_errors.NoPredictTask"],
        ["NoPredictTask has nothing to predict", "validate"],
    ),
    # --ckpt_path: nothing trained under the root, a name for a fit in this process, another model's, a run folder
    "ckpt-last-nothing-trained": (
        ["validate", *CLM, V, "--ckpt_path=last", "--trainer.default_root_dir=FRESH"],
        ["--ckpt_path=last: no last.ckpt under", "fresh"],
    ),
    "ckpt-last-truncated": (
        ["validate", *CLM, V, "--ckpt_path=last", "--trainer.default_root_dir=CUT"],
        ["last.ckpt' is not a complete checkpoint"],
    ),
    "ckpt-last-only-in-an-older-run-folder": (  # its model is unknown: the user says whether it is meant
        [
            "fit",
            *CLM,
            "--data.train_file=TEXT",
            V,
            "--data.batch_size=2",
            "--trainer.max_steps=1",
            "--ckpt_path=last",
            "--trainer.default_root_dir=OLDER",
        ],
        ["no last.ckpt;", "version_0/checkpoints/last.ckpt is from a run folder of before runs were named", "move"],
    ),
    "ckpt-best": (["test", *CLM, "--data.test_file=TEXT", "--ckpt_path=best"], ["--ckpt_path=best", "'last'"]),
    "ckpt-other-model-size": (
        ["validate", *CLM, V, "--ckpt_path=CKPT", "--model.model_name_or_path=NARROW"],
        # the checkpoint names the model it was trained from: the disagreement is said before any weight is read
        ["was trained from model_name_or_path=", "narrow-gpt2", "a checkpoint never chooses the model"],
    ),
    "ckpt-run-folder": (["validate", *CLM, V, "--ckpt_path=RUN_DIR"], ["is a directory", "checkpoints/epoch=0"]),
    # --config: another family's, empty, a tab, not a mapping, not UTF-8, missing, a folder
    "config-two-families": (
        ["validate", "--config=QS_CLASSIFICATION", "--config=QS_TRANSLATION"],
        ["quickstart_classification.yaml", "quickstart_translation.yaml", "configs of two experiments"],
    ),
    "config-empty": (["validate", *CLM, V, "--config=EMPTY_YAML"], ["empty.yaml' is empty"]),
    "config-tab": (["validate", *CLM, V, "--config=TAB_YAML"], ["tab.yaml' line 2, column 1: a tab character"]),
    "config-not-a-mapping": (["validate", *CLM, V, "--config=LIST_YAML"], ["list.yaml' holds a list, not options"]),
    "config-not-utf8": (["validate", *CLM, V, "--config=LATIN1"], ["latin1.txt' is not UTF-8 text"]),
    "config-missing": (["validate", *CLM, V, "--config=NOWHERE"], ["nowhere.ckpt' does not exist"]),
    "config-folder": (["validate", *CLM, V, "--config=A_DIR"], ["a_dir' is a folder"]),
    # --trainer.default_root_dir: a file, or below one
    "root-is-a-file": (["validate", *CLM, V, "--trainer.default_root_dir=TEXT"], ["text.txt is a file, not a folder"]),
    "root-below-a-file": (
        ["validate", *CLM, V, "--trainer.default_root_dir=TEXT/runs"],
        ["text.txt is a file, not a folder"],
    ),
    # sizes, counts and intervals out of range (every Trainer minimum: test_trainer_edge_values_stay_valid)
    "batch-size-zero": (["validate", *CLM, V, "--data.batch_size=0"], ["batch_size must be positive, got 0"]),
    "eval-batch-size-zero": (
        ["validate", *CLM, V, "--data.eval_batch_size=0"],
        ["eval_batch_size must be positive, got 0"],
    ),
    "num-workers-negative": (["validate", *CLM, V, "--data.num_workers=-2"], ["num_workers must be 0", "got -2"]),
    "learning-rate-negative": (
        ["validate", *CLM, V, "--model.optim.learning_rate=-0.001"],
        ["optim.learning_rate must be 0 or more, got -0.001"],
    ),
    "max-epochs-below-minus-one": (
        ["fit", *CLM, "--data.train_file=TEXT", "--trainer.max_epochs=-5"],
        ["--trainer.max_epochs=-5 is out of range", "-1 trains without an epoch limit"],
    ),
    "devices-zero": (["validate", *CLM, V, "--trainer.devices=0"], ["--trainer.devices=0 runs on no device"]),
    "accumulate-zero": (
        ["fit", *CLM, "--data.train_file=TEXT", "--trainer.accumulate_grad_batches=0"],
        ["--trainer.accumulate_grad_batches=0 is out of range: it takes 1 or more"],
    ),
    "val-check-interval-zero": (
        ["fit", *CLM, "--data.train_file=TEXT", "--trainer.val_check_interval=0"],
        ["--trainer.val_check_interval=0 is out of range"],
    ),
    "max-time-malformed": (  # refused by Lightning's Trainer itself
        ["fit", *CLM, "--data.train_file=TEXT", "--trainer.max_time=00:00:-1:00"],
        ["--trainer:", "is not a valid duration"],
    ),
}


class NoPredictTask(CausalLMTask):
    """A task without its own predict_step (every lit_hf family has one now): what `predict` says for such a task."""

    predict_step = L.LightningModule.predict_step


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under the root, but for the cache of prepared data."""
    paths = [p for p in sorted(root.rglob("*")) if p.relative_to(root).parts[0] != "cache"]
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in paths}


def swapped(root: Path, args: list[str]) -> list[str]:
    """The case's placeholders (`--option=NAME`, `NAME/more`) replaced by the fixture's paths."""
    swap = {
        "TEXT": root / "text.txt", "EMPTY_JSONL": root / "empty.jsonl", "LATIN1": root / "latin1.txt",
        "BROKEN_JSONL": root / "broken.jsonl", "A_DIR": root / "a_dir", "TRAIN_CSV": root / "train.csv",
        "UNSEEN_CSV": root / "unseen.csv", "NOWHERE": root / "nowhere.ckpt", "TRUNCATED": root / "truncated.ckpt",
        "UNSAFE": root / "unsafe.ckpt", "EMPTY_YAML": root / "empty.yaml", "TAB_YAML": root / "tab.yaml",
        "LIST_YAML": root / "list.yaml", "NARROW": root / "narrow-gpt2", "FRESH": root / "fresh", "CUT": root / "cut",
        "OLDER": root / "older",
        "QS_CLASSIFICATION": REPO / "configs" / "quickstart_classification.yaml",
        "QS_TRANSLATION": REPO / "configs" / "quickstart_translation.yaml",
        "CKPT": checkpoint(root), "RUN_DIR": checkpoint(root).parents[1], "BAD_YAML": root / "bad.yaml",
        "MANY": 2 * (os.cpu_count() or 1) + 1,
        "RAW_VOCAB": RAW_VOCAB, "FIVE_TOKENS": root / "five-tokens",
    }  # fmt: skip
    out = []
    for arg in args:
        option, _, value = arg.partition("=")
        name, _, rest = value.partition("/")
        out.append(f"{option}={swap[name]}{'/' + rest if rest else ''}" if name in swap else arg)
    return out


def assert_refused(root: Path, args: list[str], needles: list[str], capsys: pytest.CaptureFixture) -> None:
    """`main(args)` ends with exit status 2, one `lit_hf: error:` line holding every needle, no traceback, and
    leaves every file under `root` (but the data cache) as it was, with no new file or folder."""
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(root) == before


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_writes_nothing(earlier_run, causal_lm_dir, capsys, case) -> None:
    root = earlier_run
    (root / "bad.yaml").write_text("trainer:\n  max_epoch: 3\n")
    args, needles = CASES[case]
    args = swapped(root, args)
    given = {arg.split("=")[0] for arg in args}  # the case's own root or model win over the common ones
    assert_refused(
        root, [*args, *(a for a in common(root, causal_lm_dir()) if a.split("=")[0] not in given)], needles, capsys
    )


def test_trainer_edge_values_stay_valid() -> None:
    """The least value each check takes is one Lightning's Trainer runs with (-1 epochs: no limit; 0 sanity
    steps), so the checks refuse nothing that works; one below it is refused."""
    from jsonargparse import Namespace

    from lit_hf.checks import TRAINER_MINIMUMS, check_devices, check_trainer
    from lit_hf.errors import ConfigError

    least = {name: minimum for name, (minimum, _) in TRAINER_MINIMUMS.items()}
    fractions = {"limit_train_batches": 1.0, "limit_val_batches": 0, "limit_test_batches": 2.0, "overfit_batches": 0.0}
    edges = {**least, **fractions, "val_check_interval": 1.0, "gradient_clip_val": 0.0}
    check_trainer(Namespace(**edges))
    check_devices("cpu", -1)
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, **edges)
    below = {**{name: value - 1 for name, value in least.items()}, "limit_val_batches": 1.5, "val_check_interval": 0.0}
    for name, value in below.items():
        with pytest.raises(ConfigError, match=f"--trainer.{name}={value} is out of range"):
            check_trainer(Namespace(**{**edges, name: value}))


def test_read_only_output_folder(earlier_run, causal_lm_dir, capsys, monkeypatch, tmp_path) -> None:
    """A folder the run cannot write to is refused before the run starts. Tests run as root, whom permissions do
    not stop, so the answer of `os.access` (false on a read-only file system, even for root) is replaced."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and access(path, mode, **kw))
    args = [
        "validate", *CLM, f"--data.validation_file={earlier_run / 'text.txt'}",
        *common(tmp_path, causal_lm_dir()), f"--trainer.default_root_dir={locked / 'runs'}",
    ]  # fmt: skip
    assert_refused(tmp_path, args, [f"{locked} cannot be written to", "give a folder you can write to"], capsys)


class NearlyFullDisk(io.FileIO):
    """A file on a disk with 64 KiB free: a write that would need more fails with ENOSPC, as `os.write` does. The
    weights' large write fails and the small writes around it fit, so torch says only `unexpected pos`."""

    def write(self, data: bytes) -> int:
        if self.tell() + len(data) > 64 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_while_writing_a_checkpoint(earlier_run, causal_lm_dir, capsys, monkeypatch) -> None:
    """One line naming the checkpoint and the system's reason (torch's zip writer can report it as `unexpected
    pos`), no half-written file, and the earlier run's files and no new `version_N/` are left."""
    from lit_hf import atomic

    monkeypatch.setattr(atomic, "open", lambda path, mode: io.BufferedWriter(NearlyFullDisk(path, mode)), raising=False)
    root = earlier_run
    args = [
        "fit", *CLM, *common(root, causal_lm_dir()), f"--data.train_file={root / 'text.txt'}",
        f"--data.validation_file={root / 'text.txt'}", "--data.block_size=32", "--data.batch_size=2",
        "--data.max_train_samples=4", "--data.max_eval_samples=2", "--trainer.max_epochs=1",
    ]  # fmt: skip
    needles = [".ckpt (No space left on device)", "free space there", "earlier files are kept"]
    assert_refused(root, args, needles, capsys)


def test_read_only_while_writing_a_checkpoint(tmp_path: Path) -> None:
    from lit_hf.atomic import AtomicCheckpointIO
    from lit_hf.errors import LitHFError

    (tmp_path / "last.ckpt").write_bytes(b"the earlier checkpoint")

    def read_only(path: Path, mode: str) -> io.BufferedWriter:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    io_plugin = AtomicCheckpointIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lit_hf.atomic.open", read_only, raising=False)
        with pytest.raises(LitHFError, match=r"last.ckpt \(Read-only file system\); give a --trainer.default_root_dir"):
            io_plugin.save_checkpoint({"weights": torch.zeros(4)}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert (tmp_path / "last.ckpt").read_bytes() == b"the earlier checkpoint"


def test_download_without_a_repo_id(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["download"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "lit_hf: error: a repo id is missing, e.g. `python -m lit_hf download openai-community/gpt2`; "
        "`python -m lit_hf download --help` lists the options."
    ]


def test_other_ranks_stay_quiet_when_a_peer_ends(monkeypatch, capsys) -> None:
    """A process other than rank 0 whose collective broke because another process went away ends with status 1
    and no traceback (under torchrun or SLURM, which start the processes themselves): the process that ended first
    says why. Rank 0 keeps the traceback."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    import lit_hf.cli.lightning as cli

    def peer_gone(**kwargs: object) -> None:
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:14768")

    monkeypatch.setattr(cli, "LitHFCLI", peer_gone)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])
    assert exit_info.value.code == 1 and capsys.readouterr().err == ""
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        main(["validate"])


def test_checkpoints_load_weights_only(earlier_run) -> None:
    """A lit_hf checkpoint holds tensors and plain values only: `torch.load(weights_only=True)` reads it whole."""
    loaded = torch.load(checkpoint(earlier_run), weights_only=True, map_location="cpu")
    assert loaded["hyper_parameters"]["_class_path"] == "lit_hf.tasks.CausalLMTask"
    assert all(isinstance(v, torch.Tensor) for v in loaded["state_dict"].values())


def test_export_is_safetensors_and_remote_code_stays_off(earlier_run) -> None:
    (export,) = (earlier_run / "runs").rglob("huggingface")
    assert (export / "model.safetensors").is_file() and not list(export.glob("*.bin"))
    saved = torch.load(checkpoint(earlier_run), weights_only=True, map_location="cpu")
    assert saved["hyper_parameters"]["hub"]["trust_remote_code"] is False  # the task's and, linked, the data module's
    assert saved["datamodule_hyper_parameters"]["hub"]["trust_remote_code"] is False
    cached = [p for p in (earlier_run / "cache" / "lit_hf").rglob("*") if p.is_file()]
    assert cached and {p.suffix for p in cached} == {".arrow", ".json"}  # Arrow tables and JSON metadata only


def test_more_gpus_than_the_machine_has(monkeypatch) -> None:
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


def two_processes(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m lit_hf ARGS --trainer.devices=2 --trainer.strategy=ddp` (gloo on CPUs), as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_hf", *args, "--trainer.devices=2", "--trainer.strategy=ddp"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluation_set_smaller_than_the_processes(earlier_run, causal_lm_dir, tmp_path) -> None:
    """Two processes, one block: one line from the two processes, status 2, and no `version_N/` left."""
    (tmp_path / "v.txt").write_text((earlier_run / "text.txt").read_text()[:400])
    args = [
        "validate", *CLM, f"--data.validation_file={tmp_path / 'v.txt'}", "--data.block_size=64",
        "--data.max_eval_samples=1", *common(tmp_path, causal_lm_dir()),
    ]  # fmt: skip
    done = two_processes(args)
    lines = [line for line in done.stderr.splitlines() if line.startswith("lit_hf: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines == [
        "lit_hf: error: The evaluation set has 1 examples, fewer than the 2 processes; "
        "use fewer devices or more evaluation data."
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_mistake_only_rank_zero_meets(earlier_run, causal_lm_dir, tmp_path) -> None:
    """Data preparation runs on rank 0 while rank 1 waits in a barrier: rank 0's one line, status 2, and no
    traceback from rank 1 (it ended in gloo's 'Connection closed by peer' when rank 0 exited; now rank 0 stops it)."""
    args = [
        "validate",
        *CLM,
        f"--data.validation_file={earlier_run / 'broken.jsonl'}",
        *common(tmp_path, causal_lm_dir()),
    ]
    done = two_processes(args)
    lines = [line for line in done.stderr.splitlines() if line.startswith("lit_hf: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and "broken.jsonl" in lines[0] and "line 3 is not valid JSON" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_classification_longer_than_the_model_truncates_with_a_notice(earlier_run, classifier_dir, tmp_path) -> None:
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
