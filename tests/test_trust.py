"""Export never destroys and nothing runs from a checkpoint: each refusal is one `lit_hf: error:` line and exit
status 2, with every file before it byte-identical, nothing new left behind, and the payload of a crafted checkpoint
(a pickle, a sharded folder, a model folder's `auto_map` code) never run: it would write a marker file."""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from runs import family_args

from lit_hf.cli import main

TASK = family_args("causal_lm")
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
MONITOR = ["--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.monitor=val/loss"]


class Payload:
    """Unpickled in full, it writes `marker`: what a crafted checkpoint runs when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def data_args(root: Path) -> list[str]:
    text = str(root / "text.txt")
    return [f"--data.train_file={text}", f"--data.validation_file={text}", f"--data.data_cache_dir={root / 'cache'}",
            "--data.block_size=32", "--data.batch_size=2", "--data.max_train_samples=4", "--data.max_eval_samples=2",
            f"--trainer.default_root_dir={root / 'runs'}", *QUIET]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, causal_lm_dir) -> Path:
    """A finished tiny fit with two checkpoints and its export, a user's folder and file, an earlier export, and the
    crafted inputs: a pickled payload, sharded folders with payloads, a model folder whose config runs its code."""
    root = tmp_path_factory.mktemp("trust")
    (root / "text.txt").write_text((data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8")[:3000])
    model = f"--model.model_name_or_path={causal_lm_dir()}"
    main(["fit", *TASK, model, *data_args(root), *MONITOR, "--trainer.callbacks.save_last=true",
          "--trainer.max_epochs=1"])  # fmt: skip
    run = root / run_path(root)
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2
    (root / "mine" / "sub").mkdir(parents=True)
    (root / "mine" / "notes.txt").write_text("my own notes")
    (root / "mine" / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (root / "notes.txt").write_text("a file")
    main(["export", f"--config={run / 'config.yaml'}", f"--ckpt_path={best(root)}", f"--export_dir={root / 'done'}"])
    (root / "done-and-mine").mkdir()
    shutil.copytree(root / "done", root / "done-and-mine", dirs_exist_ok=True)
    (root / "done-and-mine" / "notes.txt").write_text("added by the user")
    craft(root, causal_lm_dir())
    return root


def craft(root: Path, model_dir: Path) -> None:
    saved = torch.load(best(root), weights_only=True, map_location="cpu")
    torch.save({**saved, "extra": Payload(root / "MARKER")}, root / "pickled.ckpt")
    evil = root / "evil-model"  # the tiny GPT-2 whose config.json names code in the folder (`auto_map`)
    shutil.copytree(model_dir, evil)
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "evil.py").write_text(
        f"open({str(root / 'MARKER')!r}, 'w').write('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    pass\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n"
    )
    hparams = {**saved["hyper_parameters"], "model_name_or_path": str(evil), "trust_remote_code": True}
    torch.save({**saved, "hyper_parameters": hparams}, root / "remote-code.ckpt")
    sharded(root / "sharded-bytes.ckpt", {"model": saved["state_dict"], "extra": Payload(root / "MARKER")})
    sharded(root / "sharded-metadata.ckpt", {"model": saved["state_dict"]})
    (root / "sharded-metadata.ckpt" / ".metadata").write_bytes(pickle.dumps(Payload(root / "MARKER")))


def sharded(folder: Path, state: dict) -> None:
    """The layout Lightning's FSDP strategy writes: a torch.distributed.checkpoint folder and meta.pt."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)
    torch.save({"epoch": 0, "global_step": 2}, folder / "meta.pt")


def run_path(root: Path) -> str:
    """The fit's run folder, relative to `root`: `runs/lightning_logs/causal_lm-<model>/version_0`."""
    (run,) = (root / "runs" / "lightning_logs").glob("*/version_0")
    return str(run.relative_to(root))


def best(root: Path) -> Path:
    return next((root / run_path(root) / "checkpoints").glob("epoch=*.ckpt"))


def snapshot(root: Path) -> dict[str, str | None]:
    """Every file (its SHA-256) and folder (None) under `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def refused(root: Path, args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Runs the command; asserts exit 2, one error line and no traceback, and returns the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert not (root / "MARKER").exists(), "the crafted input ran its code"
    return lines[0]


RUN = "RUN"  # the fit's run folder (`run_path`), put in by the test
EXPORT = ["export", f"--config={RUN}/config.yaml", "--ckpt_path=BEST"]
VALIDATE = ["validate", *TASK, "--data.validation_file=text.txt", *QUIET, "--trainer.default_root_dir=runs"]
CASES = {
    "export-into-users-folder": ([*EXPORT, "--export_dir=mine"], ["holds files that are not a lit_hf export"]),
    "export-onto-the-run": ([*EXPORT, f"--export_dir={RUN}"], ["holds checkpoints", "outside the run"]),
    "export-onto-its-checkpoints": ([*EXPORT, f"--export_dir={RUN}/checkpoints"], ["holds checkpoints"]),
    "export-inside-the-run": ([*EXPORT, f"--export_dir={RUN}/export"], ["is inside the run folder"]),
    "export-above-the-run": ([*EXPORT, "--export_dir=runs"], ["holds files that are not a lit_hf export"]),
    "export-onto-a-file": ([*EXPORT, "--export_dir=notes.txt"], ["is a file, not a folder"]),
    "export-over-an-export": ([*EXPORT, "--export_dir=done"], ["earlier lit_hf export", "--overwrite=true"]),
    "export-over-an-export-and-user-files": (
        [*EXPORT, "--export_dir=done-and-mine", "--overwrite=true"],
        ["files besides a lit_hf export (notes.txt)"],
    ),
    "fit-export-into-users-folder": (
        ["fit", f"--config={RUN}/config.yaml", "--save_pretrained.export_dir=mine"],
        ["--save_pretrained.export_dir", "holds files that are not a lit_hf export"],
    ),
    "fit-export-onto-the-run": (
        ["fit", f"--config={RUN}/config.yaml", f"--save_pretrained.export_dir={RUN}"],
        ["--save_pretrained.export_dir", "holds checkpoints"],
    ),
    "export-pickled-checkpoint": (
        ["export", f"--config={RUN}/config.yaml", "--ckpt_path=pickled.ckpt", "--export_dir=new"],
        ["holds Python objects", "weights_only=True"],
    ),
    "export-sharded-with-pickled-entry": (
        ["export", f"--config={RUN}/config.yaml", "--ckpt_path=sharded-bytes.ckpt", "--export_dir=new"],
        ["holds Python objects"],
    ),
    "export-sharded-with-pickled-metadata": (
        ["export", f"--config={RUN}/config.yaml", "--ckpt_path=sharded-metadata.ckpt", "--export_dir=new"],
        ["holds Python objects"],
    ),
    "validate-sharded-with-pickled-metadata": (
        [*VALIDATE, "--ckpt_path=sharded-metadata.ckpt"],
        ["holds Python objects"],
    ),
    "checkpoint-names-another-model-than-the-config": (
        ["validate", f"--config={RUN}/config.yaml", "--ckpt_path=remote-code.ckpt"],
        ["was trained from model_name_or_path=", "evil-model", "but --model.model_name_or_path is", "tiny-gpt2"],
    ),
    "checkpoint-names-another-model-than-the-command-line": (
        [*VALIDATE, "--ckpt_path=BEST", "--model.model_name_or_path=OPT"],
        ["was trained from model_name_or_path=", "tiny-gpt2", "but --model.model_name_or_path is", "tiny-opt"],
    ),
    "checkpoint-switches-on-remote-code": (
        [*VALIDATE, "--ckpt_path=remote-code.ckpt"],
        ["trust_remote_code=true, which a checkpoint cannot switch on", "--model.hub.trust_remote_code=true"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_with_one_line_and_nothing_changed(root, causal_lm_dir, capsys, monkeypatch, case) -> None:
    monkeypatch.chdir(root)
    args, needles = CASES[case]
    swap = {"BEST": str(best(root)), "OPT": str(causal_lm_dir("opt"))}
    args = [arg.replace(RUN, run_path(root)) for arg in args]
    args = [arg.split("=", 1)[0] + "=" + swap[arg.split("=", 1)[1]] if arg.split("=")[-1] in swap else arg
            for arg in args]  # fmt: skip
    before = snapshot(root)
    line = refused(root, args, capsys)
    for needle in needles:
        assert needle in line, line
    assert snapshot(root) == before  # byte-identical, no `.tmp-` folder, no new `version_N/`


def test_an_earlier_export_is_replaced_when_asked(root, capsys, monkeypatch) -> None:
    """`--overwrite=true` replaces an earlier export (and nothing else); `--weights_only=false` says what it does."""
    monkeypatch.chdir(root)
    target = root / "replaced"
    shutil.copytree(root / "done", target)
    (target / "model.safetensors").write_bytes(b"stale")
    args = ["export", f"--config={run_path(root)}/config.yaml", f"--ckpt_path={best(root)}", f"--export_dir={target}"]
    capsys.readouterr()
    main([*args, "--overwrite=true", "--weights_only=false"])
    assert "lit_hf: --weights_only=false: --ckpt_path" in capsys.readouterr().out
    assert (target / "model.safetensors").read_bytes() == (root / "done" / "model.safetensors").read_bytes()
    marker = json.loads((target / "lit_hf_export.json").read_text())
    assert set(marker["files"]) == {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} - {
        "lit_hf_export.json"
    }
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_a_checkpoint_model_is_used_only_when_none_is_given(root, capsys, monkeypatch) -> None:
    """`validate --ckpt_path X` with only `--model=...`: the checkpoint's model (the one it was trained from)."""
    monkeypatch.chdir(root)
    main(["validate", *TASK, *data_args(root), f"--ckpt_path={best(root)}", "--trainer.default_root_dir=validated"])
    (results,) = (root / "validated").rglob("results.json")
    fitted = json.loads((root / run_path(root) / "results.json").read_text())
    assert json.loads(results.read_text())["val/loss"] == pytest.approx(fitted["val/loss"], rel=1e-6)
    shutil.rmtree(root / "validated")


def test_a_resumed_best_checkpoint_outside_the_run_is_not_loaded(root, causal_lm_dir, capsys, monkeypatch) -> None:
    """A checkpoint that passes the weights-only load names a pickled file as its best checkpoint; the resumed fit
    trains without validating (nothing replaces that best), and its end-of-fit export refuses to load it."""
    monkeypatch.chdir(root)
    saved = torch.load(best(root), weights_only=True, map_location="cpu")
    key = next(k for k in saved["callbacks"] if k.startswith("ModelCheckpoint"))
    saved["callbacks"][key]["best_model_path"] = str(root / "pickled.ckpt")
    torch.save(saved, root / "names-a-best.ckpt")
    args = [*TASK, f"--model.model_name_or_path={causal_lm_dir()}", *data_args(root), *MONITOR]
    args += ["--trainer.max_epochs=2", "--trainer.limit_val_batches=0"]
    line = refused(root, ["fit", *args, "--ckpt_path=names-a-best.ckpt"], capsys)
    assert "the best checkpoint" in line and "pickled.ckpt" in line and "not in this run's checkpoint folder" in line
    resumed = (root / run_path(root)).with_name("version_1")  # it saved no checkpoint: only its start files, removed
    exports = [Path(run_path(root), "huggingface")]  # the fit's own
    assert [p.relative_to(root) for p in root.rglob("huggingface*")] == exports
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    shutil.rmtree(resumed, ignore_errors=True)
    (root / "names-a-best.ckpt").unlink()


def test_checkpoint_choices_keep_the_users_model() -> None:
    from lit_hf.trust import checkpoint_choices

    hub = {"tokenizer_name": "/not/on/this/machine", "config_name": None, "trust_remote_code": 0}
    saved = {"model_name_or_path": "org/a", "hub": hub, "lr": 1.0}
    given = {"model_name_or_path": "org/a", "hub": {"tokenizer_name": "/here", "config_name": "/mine"}}
    kept = {"model_name_or_path": "org/a", "hub": {"tokenizer_name": "/not/on/this/machine", "config_name": None}}
    assert checkpoint_choices("c", saved, given, set()) == {**kept, "lr": 1.0}
    chosen = {"model_name_or_path", "hub.tokenizer_name", "hub.config_name"}  # the same, not here, not saved
    assert checkpoint_choices("c", saved, given, chosen) == {"hub": {}, "lr": 1.0}
    assert saved["hub"]["trust_remote_code"] == 0  # the checkpoint's own dict is not changed
    assert checkpoint_choices("c", {"hub": {"trust_remote_code": False, "x": 1}}, {}, set()) == {"hub": {"x": 1}}
