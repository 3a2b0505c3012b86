"""`python -m lit_hf --help`: every command listed, printed without importing torch or Lightning."""

import subprocess
import sys

from lightning.pytorch.cli import LightningCLI

from lit_hf.cli.help import COMMANDS


def test_top_help_lists_lightnings_subcommands_and_ours() -> None:
    assert list(COMMANDS)[:4] == list(LightningCLI.subcommands())
    assert list(COMMANDS)[4:] == ["export", "lm-eval", "download"]  # lit_hf/cli/dispatch.py dispatches them


def test_top_help_imports_neither_torch_nor_lightning() -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lit_hf", "--help"], capture_output=True, text=True, check=True
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}
    assert "lit_hf.cli.help" in imported and not {"torch", "lightning", "transformers"} & imported
    assert all(f"  {name} " in run.stdout for name in COMMANDS)


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -m lit_hf ARGS` and the modules it imported (`-X importtime`)."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "lit_hf", *args], capture_output=True, text=True)
    return run, {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}


def test_a_bare_command_lists_every_command_and_a_misspelt_one_is_one_line_both_without_lightning() -> None:
    bare, imported = imported_modules()
    assert bare.returncode == 2 and all(f"  {name} " in bare.stdout for name in COMMANDS)
    assert bare.stderr.splitlines()[-1] == "lit_hf: error: give a command, e.g. python -m lit_hf fit --config CFG"
    assert not {"torch", "lightning"} & imported
    wrong, imported = imported_modules("fitt", "--config=x.yaml")
    assert wrong.returncode == 2 and not {"torch", "lightning"} & imported
    last = wrong.stderr.splitlines()[-1]
    assert last == f"lit_hf: error: 'fitt' is no command; give one of {', '.join(COMMANDS)} (python -m lit_hf --help)."


def test_usage_lines_name_the_command_users_type_and_list_lit_hfs_classes(capsys) -> None:
    """`usage: python -m lit_hf [options] fit`, not argparse's `__main__.py`; `--model` and `--data` list every
    family's classes by the paths users type, and take them by short name."""
    import pytest

    from lit_hf.cli import main
    from lit_hf.families import class_paths, load

    for command in ("fit", "export", "lm-eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert capsys.readouterr().out.startswith(
            f"usage: python -m lit_hf {'[options] ' * (command == 'fit')}{command}"
        )
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    listed = " ".join(capsys.readouterr().out.split())  # the help wraps lines
    for path in class_paths("tasks") + class_paths("data"):  # GlueDataModule is TextClassificationDataModule
        assert f"lit_hf.{load(path).__name__}" in listed
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "LanguageModelingDataModule"])
    assert "--data.block_size" in capsys.readouterr().out


def test_a_commands_help_is_printed_from_the_cache_after_the_first_time(tmp_path, monkeypatch) -> None:
    """The second `validate --help` prints the first one's text without importing Lightning; an edited lit_hf file
    (or another terminal width, another package version) is another cache entry."""
    import os

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100"}
    env.pop("LIT_HF_NO_HELP_CACHE", None)
    runs = [
        subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "lit_hf", "validate", "--help"],
            env=env,
            capture_output=True,
            text=True,
        )
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0] and runs[0].stdout == runs[1].stdout
    assert "--trainer.max_epochs" in runs[0].stdout and "lit_hf.CausalLMTask" in runs[1].stdout
    imported = [{line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()} for run in runs]
    assert "lightning" in imported[0] and not {"torch", "lightning"} & imported[1]
    assert len(list((tmp_path / "lit_hf" / "help").iterdir())) == 1

    import lit_hf
    from lit_hf.cli.help_cache import cache_key

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(lit_hf, "__file__", str(package / "__init__.py"))
    before = cache_key("validate")
    (package / "__init__.py").write_text("x = 22\n")
    assert cache_key("validate") != before
