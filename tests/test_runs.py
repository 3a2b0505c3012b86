"""Where runs write: `validate`, `test` and `predict` of a run's checkpoint go into that run's folder."""

import json
from pathlib import Path

from jsonargparse import Namespace
from reference import run_lit_hf
from runs import rows_of

from lit_hf.cli import main
from lit_hf.runs import checkpoint_run, named_logger

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = [f"--config={REPO / 'configs' / 'quickstart_clm.yaml'}", "--trainer.enable_progress_bar=false"]
SHORT = ["--data.max_train_samples=16", "--trainer.limit_val_batches=1"]
NO_SUMMARY = "--trainer.enable_model_summary=false"


def test_a_checkpoint_is_evaluated_into_its_run(tmp_path, monkeypatch, capsys):
    """The quickstart's fit, then `validate` twice (by its path, then as `--ckpt_path=last`: `last.ckpt` is a link,
    and the run is the folder holding it) and `predict` (two processes) of its checkpoint, as a user types them (no
    --trainer.default_root_dir): each writes into `<run>/<subcommand>[-N]/`, the fit's results
    stay as they were, and no new `version_N` appears; a `--trainer.default_root_dir` given wins. The fit prints no
    model summary, as asked."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *QUICKSTART, *SHORT, "--trainer.max_steps=1", "--data.data_cache_dir=cache", NO_SUMMARY])
    assert " parameters, " not in capsys.readouterr().out  # lit_hf's one-line summary is the model summary
    run = tmp_path / "lightning_logs" / "causal_lm-byte-gpt2" / "version_0"  # the config's task and model
    fit_results = (run / "results.json").read_text()
    (tmp_path / "prompts.txt").write_text("def \nimport \n")
    evaluate = [*QUICKSTART, *SHORT, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--data.data_cache_dir=cache"]
    main(["validate", *evaluate])
    main(["validate", *QUICKSTART, *SHORT, "--ckpt_path=last", "--data.data_cache_dir=cache"])  # the same, named so
    predict = ["predict", *evaluate, "--data.predict_file=prompts.txt", "--model.generation.max_new_tokens=2"]
    run_lit_hf(*predict, "--trainer.devices=2", "--trainer.strategy=ddp")  # rank 0 names the folder for both
    assert [p.relative_to(run.parents[1]) for p in run.parents[1].glob("*/*")] == [run.relative_to(run.parents[1])]
    made = {"checkpoints", "huggingface", "validate", "validate-1", "predict"}
    assert {p.name for p in run.iterdir() if p.is_dir()} == made
    assert (run / "results.json").read_text() == fit_results
    first, second = (json.loads((run / name / "results.json").read_text()) for name in ("validate", "validate-1"))
    assert first == second and "val/ppl" in first  # the same checkpoint scored twice, neither overwritten
    assert [row["prompt"] for row in rows_of(run / "predict" / "predictions.jsonl")] == ["def ", "import "]
    main(["validate", *evaluate, "--trainer.default_root_dir=elsewhere"])
    assert (tmp_path / "elsewhere" / "lightning_logs" / "causal_lm-byte-gpt2" / "version_0" / "results.json").is_file()
    assert not (run / "validate-2").exists()


def test_the_users_choice_of_place_wins(tmp_path):
    """No run folder for a fit, a chosen logger or root, a checkpoint outside `checkpoints/`, or a hub model."""
    ckpt = tmp_path / "lightning_logs" / "version_3" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (tmp_path / "mine.ckpt").write_bytes(b"")
    plain = Namespace(logger=None, default_root_dir=None)
    assert checkpoint_run("test", plain, str(ckpt)) == ckpt.parent.parent
    assert checkpoint_run("fit", plain, str(ckpt)) is None
    assert checkpoint_run("test", Namespace(logger=False, default_root_dir=None), str(ckpt)) is None
    assert checkpoint_run("test", Namespace(logger=None, default_root_dir="runs"), str(ckpt)) is None
    assert checkpoint_run("predict", plain, str(tmp_path / "mine.ckpt")) is None
    assert checkpoint_run("validate", plain, None) is None


def test_runs_are_named_after_task_and_model_unless_the_user_names_them(tmp_path):
    """`lightning_logs/<task>-<model>` under the root (the last part of a hub id; a family of several tasks names the
    task); a logger the user gives (with its own name) wins."""
    model = Namespace(class_path="lit_hf.tasks.TranslationTask", init_args=Namespace(model_name_or_path="google/mt5/"))
    logger = named_logger(Namespace(logger=None, default_root_dir=str(tmp_path)), model)
    assert Path(logger.root_dir) == tmp_path / "lightning_logs" / "translation-mt5"
    chosen = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(name="mine"))
    assert named_logger(Namespace(logger=chosen, default_root_dir=None), model) is None
    assert named_logger(Namespace(logger=False, default_root_dir=None), model) is None
