"""jsonargparse's parse errors (about 60 lines of nested Union alternatives) turned into one line: the option, what
was wrong with it, and the close matches (difflib) or the way to list the options; and the `--config` files read
before jsonargparse does, which names neither the file nor the cause of what it cannot read."""

import difflib
import importlib
import inspect
import os
import re
from argparse import ArgumentParser
from typing import Any

import lightning as L
import yaml

from lit_hf.errors import ConfigError
from lit_hf.families import load
from lit_hf.options import MOVED, MOVED_DATA

SUBCOMMANDS = ("fit", "validate", "test", "predict", "export")

NOISE = re.compile(r"Expected a <class 'NoneType'>|Does not validate against|Subtypes:|Errors:|Given value")


def explain_parse_error(message: str, options: list[str]) -> str:
    """One line for a jsonargparse error `message`; `options` are the parser's option strings (`--trainer.devices`)."""
    text = _explain(message, options)
    return text.replace("?.", "?").replace("?; ", "? ")


def _explain(message: str, options: list[str]) -> str:
    keys = re.findall(r'Parser key "([^"]+)"', message)
    class_path = _last(re.findall(r"Problem with given class_path '([^']+)'", message))
    option = "--" + ".".join(_dedupe(keys)) if keys else None
    if match := re.search(r"unrecognized arguments: (\S+)", message):
        given = match.group(1).split("=")[0]
        if moved := _moved(given):
            return moved
        return f"Unknown option {given}{_close(given, options)}{_listing(given)}."
    if match := re.search(r"(?:Group|Subcommand) '([^']+)' does not accept option '([^']+)'", message):
        group, name = match.groups()
        given = f"--{name}" if message.startswith("Subcommand") or "Subcommand '" in message else f"--{group}.{name}"
        return f"Unknown option {given}{_close(given, options)}{_listing(given)}."
    if match := re.search(r"Option '([^']+)' is not accepted", message):
        name, accepted = match.group(1), _parameters(class_path)
        if moved := _moved(f"{option}.{name}"):
            return moved
        return (
            f"Unknown option {option}.{name}: {_short(class_path)} has no parameter {name!r}"
            + (_close(name, accepted) or f" (it takes: {', '.join(accepted)})")
            + _listing(f"{option}.{name}", class_path)
            + "."
        )
    if match := re.search(r"module '([^']+)' has no attribute '([^']+)'", message):
        module, name = match.groups()
        classes = _classes(module)
        return (
            f"{option}: there is no class {module}.{name}"
            + (_close(f"{module}.{name}", classes) or f" (classes there: {', '.join(classes)})")
            + "."
        )
    if match := re.search(r"Expected a typing\.Literal\[([^\]]*)\]", message):
        choices = re.findall(r"'([^']*)'", match.group(1))
        value = _given(message)
        return f"{option}: {value!r} is not one of {', '.join(choices)}{_close(value or '', choices)}."
    if match := re.search(r"Expected a <class '([^']+)'>", message):
        return f"{option}: expected {match.group(1)}, got {_given(message)!r}{_listing(option, class_path)}."
    return f"{option or 'The command line'}: {_first_meaningful(message)}"


def _moved(option: str) -> str | None:
    """Where an option of the flat task options (before the groups) is now, or None."""
    section, _, name = option.removeprefix("--").rpartition(".")
    section = section.removesuffix(".init_args")
    if section == "model" and name in MOVED:
        return f"--model.{name} is now --model.{MOVED[name]} (docs/migration.md)"
    if section == "data" and name in MOVED_DATA:
        return f"--data.{name} is now linked from --model.{MOVED_DATA[name]} (docs/migration.md)"
    return None


def option_strings(parser: ArgumentParser) -> list[str]:
    """Every option of a parser and of its subcommand parsers."""
    found: list[str] = []
    for action in parser._actions:
        found += [s for s in action.option_strings if s.startswith("--")]
        if isinstance(getattr(action, "choices", None), dict):
            for sub in action.choices.values():
                if isinstance(sub, ArgumentParser):
                    found += option_strings(sub)
    return sorted(set(found))


def _close(given: str, candidates: list[str]) -> str:
    candidates = [c for c in candidates if not c.endswith("+")]  # jsonargparse's append forms (`--trainer.devices+`)
    matches = difflib.get_close_matches(given, candidates, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def _listing(option: str | None, class_path: str | None = None) -> str:
    """Where to read the accepted options."""
    group = (option or "").lstrip("-").split(".")[0]
    if class_path and group in ("model", "data"):
        return f" (`--{group}.help {class_path}` lists its options)"
    return " (`--help` lists the options)"


def _parameters(class_path: str | None) -> list[str]:
    try:
        cls = load(class_path or "")
    except (ImportError, AttributeError, ValueError):
        return []
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


def _classes(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    kinds = (L.LightningModule, L.LightningDataModule)
    names = {*vars(module), *getattr(module, "__all__", ())}  # `lit_hf.tasks` imports its classes on first use
    return sorted(
        f"{module_name}.{name}"
        for name in names
        if inspect.isclass(value := getattr(module, name, None)) and issubclass(value, kinds) and value not in kinds
    )


def _given(message: str) -> str | None:
    for line in message.splitlines():
        if match := re.search(r"(?:Given value|Got value): (.*)$", line.strip()):
            if not match.group(1).startswith("NestedArg("):
                return match.group(1)
    return None


def _short(class_path: str | None) -> str:
    return (class_path or "the class").rpartition(".")[2]


def _first_meaningful(message: str) -> str:
    lines = [line.strip(" -") for line in message.splitlines() if line.strip() and not NOISE.search(line)]
    return lines[-1] if lines else message.strip()


def _last(items: list[str]) -> str | None:
    return items[-1] if items else None


def _dedupe(keys: list[str]) -> list[str]:
    """`Parser key "data"` then `"task_name"`: the path to the innermost key, once each."""
    out: list[str] = []
    for key in keys:
        if key not in out:
            out.append(key)
    return out


def check_config_files(args: list[str]) -> None:
    """Every `--config` file of a command line must be a readable YAML mapping, and all of them of one family:
    a second experiment's config would silently replace the first one's task and data (its init_args merged in)."""
    seen: dict[str, tuple[str, str]] = {}  # "model"/"data" -> (file, class name) of the first file that sets it
    for path in config_paths(args):
        config = read_config(path)
        for group in ("model", "data"):
            name = class_name(config, group)
            first = seen.setdefault(group, (path, name)) if name else None
            if first and _short(first[1]) != _short(name):  # `CausalLMTask` is `lit_hf.tasks.CausalLMTask`
                raise ConfigError(
                    f"--config {first[0]!r} sets --{group}={first[1]} and --config {path!r} --{group}={name}: "
                    f"configs of two experiments in one command; give one experiment's config, plus overlays that "
                    f"set no --{group} (as configs/overlays/*.yaml do)."
                )


def config_paths(args: list[str]) -> list[str]:
    """The values of `--config=PATH` and `--config PATH` that name files (jsonargparse also takes inline YAML)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    values += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return [v for v in values if "\n" not in v and "://" not in v and not v.lstrip().startswith("{")]


def read_config(path: str) -> dict[str, Any]:
    """A config file's options; a missing file, a folder, a file that is not UTF-8 YAML, an empty one or one that
    holds no mapping is a ConfigError naming the file and the cause (with line and column for YAML)."""
    if os.path.isdir(path):
        raise ConfigError(f"--config {path!r} is a folder; give a YAML file.")
    if not os.path.exists(path):
        raise ConfigError(
            f"--config {path!r} does not exist; check the path (a relative path starts from {os.getcwd()})."
        )
    try:
        config = yaml.safe_load(open(path, encoding="utf-8").read())
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--config {path!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "give a YAML file."
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(yaml_problem(path, err)) from err
    if config is None:
        raise ConfigError(f"--config {path!r} is empty (no options); write options in it, e.g. `trainer:`, or drop it.")
    if not isinstance(config, dict):
        raise ConfigError(
            f"--config {path!r} holds a {type(config).__name__}, not options; a config is a mapping such as "
            "`trainer:` with `max_epochs: 3` indented below it."
        )
    return config


def yaml_problem(path: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if "\\t" in problem or "tab" in problem:
        return f"--config {path!r}{where}: a tab character; YAML indents with spaces only, replace it with spaces."
    return f"--config {path!r}{where}: {problem}, so it is not valid YAML; fix the file there."


def class_name(config: dict[str, Any], group: str) -> str | None:
    """The class a config sets for `model` or `data` (full or short class path), also under a subcommand key."""
    sections = [config] + [config[k] for k in SUBCOMMANDS if isinstance(config.get(k), dict)]
    for section in sections:
        value = section.get(group)
        value = value.get("class_path") if isinstance(value, dict) else value
        if isinstance(value, str):
            return value
    return None
