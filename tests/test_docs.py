"""Every command in README.md and docs/*.md parses as written: nothing is run, nothing is downloaded.

Commands come from fenced code blocks. In `bash`/`sh`/`shell` blocks every line must be a command this test knows
(a `lit_hf` command, a `bench/` script, `torchrun -m lit_hf`, `sbatch`) or one of SKIPPED; in other blocks (output,
`console`) only lines that start like a command are checked. `python -m lit_hf` and `lit-hf` commands
go through the parser `lit_hf.cli.main` builds (the export command's for `export`, argparse's for `download`) and
stop once parsed, so an unknown option, a bad value or a missing config file fails here. A `bench/` command's flags
go through the script's own argparse parser, rebuilt from its source without importing it (its imports need the
`bench` extra). Placeholders for what a user's run makes are replaced as PLACEHOLDERS says.
"""

import argparse
import ast
import contextlib
import io
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightning.pytorch.cli import ArgsType, LightningArgumentParser

import lit_hf.cli
import lit_hf.cli.export
import lit_hf.cli.lightning
import lit_hf.harness
from lit_hf.cli import download
from lit_hf.errors import LitHFError

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# What the docs write for a user's own files, and what stands in for them here (any value parses; these are the
# names a run would make). A capitalised word not listed here is reported as an unknown placeholder.
PLACEHOLDERS = {
    "CKPT": "lightning_logs/causal_lm-gpt2/version_0/checkpoints/last.ckpt",
    "RUN": "lightning_logs/causal_lm-gpt2/version_0",
    "MODEL_DIR": "lightning_logs/causal_lm-gpt2/version_0/huggingface",
    "DIR": "exported-model",
}
SKIPPED = {"pip", "pytest", "tensorboard", "export", "cd"}  # installing, testing, logs, the shell: no lit_hf options
SHELL_BLOCKS = {"bash", "sh", "shell"}  # every line a command (console blocks: the `$ ` lines)
COMMAND_START = re.compile(r"^(\$ )?([A-Z_]+=\S+ )*(python3? -m lit_hf|python3? bench/|lit-hf|torchrun) ")


class CommandError(Exception):
    """A documented command that does not parse, with the reason."""


class Parsed(Exception):
    """Raised by a CLI right after it parsed its command line, so that nothing is built or run."""

    def __init__(self, cli: object) -> None:
        self.cli = cli


def fenced_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, in a shell block) for every line inside a fenced code block; `\\`-continued lines
    joined onto the first."""
    fence, shell, pending, start = None, False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence, shell = (None, False) if fence else (stripped, stripped[3:].strip() in SHELL_BLOCKS)
            continue
        if fence is None:
            continue
        start = start or number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped, shell
        pending, start = "", 0


def split_commands(line: str) -> list[list[str]]:
    """The line's commands as word lists: comments dropped, split at `&&`, `||`, `;` and `|`, leading `$ ` and
    `NAME=value` environment settings removed."""
    lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|"):
            commands.append([])
        elif commands[-1] or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            commands[-1].append(word)
    return [command for command in commands if command]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for each command line of the pages; a line whose words another line already had (the
    same command with another comment) is left out."""
    found: dict[str, tuple[str, str]] = {}
    for page in PAGES:
        for number, line, shell in fenced_lines(page.read_text(encoding="utf-8")):
            if line and not line.startswith("#") and (shell or COMMAND_START.match(line)):
                words = str(split_commands(line))
                found.setdefault(words, (f"{page.relative_to(REPO)}:{number}", line))
    return list(found.values())


def substituted(words: list[str]) -> list[str]:
    """Placeholders replaced wherever they stand as a whole path component or value."""
    out = []
    for word in words:
        for name, value in PLACEHOLDERS.items():
            word = re.sub(rf"(?<![\w.-]){name}(?![\w-])", value, word)
        unknown = re.findall(r"(?<![\w.$-])[A-Z][A-Z_]{2,}(?![\w-])", word.split("=", 1)[-1])
        if unknown:
            raise CommandError(f"unknown placeholder {unknown[0]} in {word!r}: add it to PLACEHOLDERS")
        out.append(word)
    return out


def check_line(line: str, parse: Callable[[list[str]], None]) -> None:
    """Raises CommandError for the first command of the line that does not parse."""
    for words in split_commands(line):
        check_command(words, parse)


def check_command(words: list[str], parse: Callable[[list[str]], None]) -> None:
    program, args = words[0], words[1:]
    if program in SKIPPED:
        return
    if program in ("python", "python3") and args[:2] == ["-m", "lit_hf"]:
        return parse(substituted(args[2:]))
    if program == "lit-hf":
        return parse(substituted(args))
    if program in ("python", "python3") and args and args[0].startswith("bench/"):
        return check_bench(args[0], substituted(args[1:]))
    if program == "torchrun" and "-m" in args and args[args.index("-m") + 1 : args.index("-m") + 2] == ["lit_hf"]:
        return parse(substituted(args[args.index("-m") + 2 :]))  # torchrun's own options are torchrun's
    if program == "sbatch":  # the batch script and its arguments (a config) must exist
        missing = [arg for arg in args if not (REPO / arg).exists()]
        if missing:
            raise CommandError(f"sbatch: no file {missing[0]}")
        return
    raise CommandError(f"{program!r} is not a command this test knows: check it, or add it to SKIPPED")


def bench_parser(script: Path) -> argparse.ArgumentParser:
    """The script's argparse parser, made by running only its module constants and the statements of the function
    that builds the `ArgumentParser` (its `add_argument` calls), not its imports."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    scope = {"argparse": argparse, "os": os, "Path": Path, "__doc__": ast.get_docstring(tree, clean=False)}
    scope["__file__"] = str(script)
    for node in tree.body:  # constants the options use (`choices=VARIANTS`); ones needing an import are left out
        if isinstance(node, ast.Assign):
            try:
                exec(compile(ast.Module([node], []), str(script), "exec"), scope)
            except NameError:
                pass
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        building = [statement for statement in function.body if "ArgumentParser(" in ast.unparse(statement)]
        if building:
            name = building[0].targets[0].id
            calls = [s for s in function.body if ast.unparse(s).startswith(f"{name}.add_argument(")]
            exec(compile(ast.Module([building[0], *calls], []), str(script), "exec"), scope)
            return scope[name]
    raise CommandError(f"{script.relative_to(REPO)} builds no argparse parser")


def check_bench(path: str, flags: list[str]) -> None:
    script = REPO / path
    if not script.is_file():
        raise CommandError(f"no script {path}")
    parser = bench_parser(script)
    parser.exit_on_error = False
    try:
        parser.parse_args(flags)
    except (argparse.ArgumentError, SystemExit) as err:  # argparse exits on unknown flags even so
        raise CommandError(f"{path} does not take {' '.join(flags)}: {err}") from err


def parse_only(cli_class: type) -> type:
    """`cli_class` that stops with `Parsed` once it has parsed its command line (LitHFCLI's one-line errors kept)."""

    class ParseOnly(cli_class):
        def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
            super().parse_arguments(parser, args)
            raise Parsed(self)

    return ParseOnly


class LitHFParser:
    """Parses `python -m lit_hf ARGS` as the command would, without building or running anything.

    `lit_hf.cli.main` (or `export_main`, `lm_eval_main`) builds its CLI with its own options, which parses and
    stops; that CLI then parses every later command itself, since building its parser is most of the cost of a
    parse. `download` is argparse's, and the top-level `--help` is `lit_hf.cli.help`'s.
    """

    ENTRIES = {
        "export": (lit_hf.cli.export, "ExportCLI", lit_hf.cli.export.export_main),
        "lm-eval": (lit_hf.harness, "LmEvalCLI", lit_hf.harness.lm_eval_main),
        "trainer": (lit_hf.cli.lightning, "LitHFCLI", lit_hf.cli.main),
    }

    def __init__(self) -> None:
        self.built: dict[str, object] = {}

    def __call__(self, args: list[str]) -> None:
        """Raises CommandError with what the user would read: the first parse goes through `main()`, which prints
        its one error line and exits 2, while a parse by a built CLI raises the error itself; both must say why."""
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                self._parse(args)
        except SystemExit as err:  # --help exits 0; argparse's and main()'s errors exit 2
            if err.code not in (0, None):
                said = stderr.getvalue().strip().splitlines()
                raise CommandError(f"exit status {err.code}: {said[-1] if said else ''}") from err
        except LitHFError as err:
            raise CommandError(str(err)) from err
        finally:
            sys.stderr.write(stderr.getvalue())  # still shown with a failing documented command

    def _parse(self, args: list[str]) -> None:
        if args[:1] == ["download"]:
            download.parser().parse_args(args[1:])
        elif args in (["--help"], ["-h"]):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sys, "argv", ["lit_hf", *args])
                lit_hf.cli.main()
        else:
            kind, args = (args[0], args[1:]) if args[:1] in (["export"], ["lm-eval"]) else ("trainer", args)
            try:
                if kind in self.built:
                    self.built[kind].parse_arguments(self.built[kind].parser, args)
                else:
                    self._build(kind, args)
            except Parsed as parsed:
                self.built[kind] = parsed.cli

    def _build(self, kind: str, args: list[str]) -> None:
        module, name, run = self.ENTRIES[kind]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, name, parse_only(getattr(module, name)))
            run(args)
        raise CommandError("the CLI ran past parsing")


@pytest.fixture(scope="module")
def parse() -> LitHFParser:
    return LitHFParser()


COMMANDS = documented_commands()


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where, line, parse, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the docs run commands from the repository's root
    try:
        check_line(line, parse)
    except CommandError as err:
        pytest.fail(f"{where}: {line}\n{err}\n{capsys.readouterr().err[-2000:]}", pytrace=False)


def test_the_pages_hold_commands():
    assert len(PAGES) >= 2 and len(COMMANDS) >= 20


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("python -m lit_hf fit --config configs/quickstart_clm.yaml --model.learning_rat=1e-3", "learning_rat"),
        ("python -m lit_hf validate --config configs/no_such.yaml", "no_such"),
        ("python -m lit_hf fit --config configs/gpt2_wikitext.yaml --data.task_name=rte", "task_name"),
        ("lit-hf fit --config configs/gpt2_wikitext.yaml --trainer.max_epochz=3", "max_epochz"),
        (
            "python -m lit_hf export --config configs/quickstart_clm.yaml --ckpt_path CKPT --export_dirr DIR",
            "--export_dirr",
        ),
        ("python -m lit_hf download openai-community/gpt2 --localdir models/gpt2", "arguments: --localdir"),
        ("python -m lit_hf lm-eval --config configs/quickstart_clm.yaml --taskz hellaswag", "--taskz"),
        ("python bench/bench_lora.py --stepz 8", "--stepz"),
        ("python bench/bench_nothing.py", "no script"),
        ("python -m lit_hf predict --config configs/quickstart_clm.yaml --ckpt_path CHECKPOINT", "CHECKPOINT"),
        ("rm -rf lightning_logs", "not a command"),
    ],
)
def test_a_wrong_command_fails(line, error, parse, monkeypatch):
    """The check itself: a misspelt option, a missing config or script, an unknown placeholder or program fail."""
    monkeypatch.chdir(REPO)
    with pytest.raises(CommandError, match=re.escape(error)):
        check_line(line, parse)


def test_raw_tokenizer_files_become_a_tokenizer_folder_as_from_hf_scripts_says(tmp_path, monkeypatch, data_dir):
    """The page's Python, run as written on the raw files of ../shared/data/tokenizers: each saved folder loads in
    `AutoTokenizer` with the model's vocabulary and the ids its hub tokenizer gives "Hello world"."""
    import shutil

    from transformers import AutoTokenizer

    page = (REPO / "docs" / "from-hf-scripts.md").read_text(encoding="utf-8")
    (code,) = [block.split("```")[0] for block in page.split("```python\n")[1:]]
    shutil.copytree(data_dir / "tokenizers", tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    exec(code, {})
    published = {  # (vocabulary size, ids of "Hello world"), as the hub's tokenizers give them
        "bert-base-uncased": (30522, [101, 7592, 2088, 102]),
        "gpt2": (50257, [15496, 995]),
        "t5-small": (32100, [8774, 296, 1]),
    }
    for name, (size, ids) in published.items():
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizers" / name)
        assert (len(tokenizer), tokenizer("Hello world")["input_ids"]) == (size, ids), name
