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


def help_run(command: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -X importtime -m lit_hf COMMAND --help` under `env`, and the modules it imported."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lit_hf", command, "--help"], env=env, capture_output=True, text=True
    )
    return run, {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}


def test_a_commands_help_is_printed_from_the_cache_after_the_first_time(tmp_path) -> None:
    """The second `validate --help` in a terminal narrower than the shipped help's 80 columns prints the first one's
    text (built live: Lightning imported) without importing Lightning."""
    import os

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "72"}
    env.pop("LIT_HF_NO_HELP_CACHE", None)
    (first, imported_first), (second, imported_second) = help_run("validate", env), help_run("validate", env)
    assert [first.returncode, second.returncode] == [0, 0] and first.stdout == second.stdout
    assert "--trainer.max_epochs" in first.stdout and "lit_hf.CausalLMTask" in second.stdout
    assert "lightning" in imported_first and not {"torch", "lightning"} & imported_second
    assert [path.name for path in (tmp_path / "lit_hf" / "help").iterdir()] == ["validate.json"]


def test_a_fresh_clones_first_fit_help_is_the_live_parsers_text_without_lightning(tmp_path) -> None:
    """With an empty cache, `fit --help` in a terminal wider than 80 columns prints what the live parser prints in
    another wide terminal (the help is 80 columns wide on both), and, with the versions lit_hf/cli/help/ was made
    for, prints the shipped copy without importing torch or Lightning; lit_hf's sources must not have changed since
    it was made (`python -m lit_hf.cli.help_cache` makes it again)."""
    import json
    import os

    from lit_hf.cli import help_cache

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "120"}
    live = subprocess.run(
        [sys.executable, "-m", "lit_hf", "fit", "--help"], env=env, capture_output=True, text=True, check=True
    )
    env.pop("LIT_HF_NO_HELP_CACHE", None)
    first, imported = help_run("fit", {**env, "COLUMNS": "100"})
    assert first.returncode == 0 and first.stdout == live.stdout and "lit_hf.GlueDataModule" in live.stdout
    shipped = json.loads((help_cache.SHIPPED / "stamp.json").read_text())
    current = help_cache.stamp(shipped["packages"])
    if {key: current[key] for key in ("python", "packages")} != {key: shipped[key] for key in ("python", "packages")}:
        assert "lightning" in imported  # other versions than the shipped help's: built live
        return
    assert current["sources"] == shipped["sources"], "lit_hf changed: python -m lit_hf.cli.help_cache"
    assert (help_cache.SHIPPED / "fit.txt").read_text() == live.stdout
    assert not {"torch", "lightning"} & imported


def test_a_copy_is_printed_only_under_the_stamp_it_was_made_under(tmp_path, monkeypatch, capsys) -> None:
    """The shipped help is printed while Python, the packages, the width (80 columns or more), jsonargparse's
    settings and the content of every lit_hf file are those of its stamp; any other one builds the help live."""
    import json
    import os

    import pytest

    import lit_hf
    from lit_hf.cli import help_cache

    def built() -> None:
        print("live")
        sys.exit(0)

    def printed() -> str:
        with pytest.raises(SystemExit) as done:
            help_cache.print_help("fit", built)
        assert done.value.code == 0
        return capsys.readouterr().out

    monkeypatch.delenv("LIT_HF_NO_HELP_CACHE", raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(help_cache, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(help_cache, "SHIPPED", tmp_path / "shipped")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(lit_hf, "__file__", str(package / "__init__.py"))
    help_cache.SHIPPED.mkdir()
    (help_cache.SHIPPED / "fit.txt").write_text("shipped\n")
    stamp = help_cache.stamp(help_cache.PACKAGES)
    (help_cache.SHIPPED / "stamp.json").write_text(json.dumps(stamp))
    assert printed() == "shipped\n"
    monkeypatch.setenv("COLUMNS", "79")
    assert printed() == "live\n"  # and kept in the user's cache for a terminal of this width
    assert printed() == "live\n" and (tmp_path / "cache" / "fit.json").is_file()
    monkeypatch.setenv("COLUMNS", "200")
    assert printed() == "shipped\n"
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    assert printed() == "live\n"
    monkeypatch.delenv("JSONARGPARSE_DEFAULT_ENV")
    (help_cache.SHIPPED / "stamp.json").write_text(
        json.dumps({**stamp, "packages": {**stamp["packages"], "torch": "1"}})
    )
    assert printed() == "live\n"
    (help_cache.SHIPPED / "stamp.json").write_text(json.dumps(stamp))
    modified = os.stat(package / "__init__.py").st_mtime_ns
    (package / "__init__.py").write_text("x = 2\n")  # same size and time, another content
    os.utime(package / "__init__.py", ns=(modified, modified))
    assert printed() == "live\n"
