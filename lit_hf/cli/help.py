"""`python -m lit_hf --help`: the commands and families in one screen, printed without importing torch or Lightning
(5 s)."""

from lit_hf.families import FAMILIES, short

# The first four are LightningCLI's subcommands (tests/test_cli_help.py holds them against
# `LightningCLI.subcommands()`); each one's own --help is LightningCLI's, with every option of the chosen classes.
COMMANDS = {
    "fit": "Train a task (--model) on a data module (--data), validating as configured.",
    "validate": "One evaluation epoch over the validation set.",
    "test": "One evaluation epoch over the test set.",
    "predict": "Predictions for the data module's predict set, written to the run's folder.",
    "export": "A checkpoint as a Hugging Face model folder (--ckpt_path CKPT --export_dir DIR).",
    "lm-eval": "A run's model through lm-evaluation-harness tasks (--tasks T1,T2; pip install lit-hf[eval]).",
    "download": "One weight format of a hub repository into a local folder, ready for fit.",
}

# The commands whose `--help` lit_hf/cli/help_cache.py prints from a copy made by the live parser (0.3 s) instead of
# building it, which imports Lightning (6 s of CPU).
COPIED_HELP = ("fit", "validate", "test", "predict", "export")

HELP = """usage: python -m lit_hf [-h] [-c CONFIG] [--print_config[=flags]] {{{names}}} ...

Fine-tune and evaluate Hugging Face transformers with PyTorch Lightning: one command, one YAML.

options:
  -h, --help            Show this help message and exit.
  -c CONFIG, --config CONFIG
                        Path to a configuration file in json or yaml format.
  --print_config [=flags]
                        Print the configuration after applying all other arguments and exit.

commands (add one followed by --help for its options, e.g. python -m lit_hf fit --config CFG --help):
{commands}

families (a task with a data module of its own family):
{families}
"""


def top_help() -> str:
    commands = "\n".join(f"  {name:<20}{text}" for name, text in COMMANDS.items())
    return HELP.format(names=",".join(COMMANDS), commands=commands, families=family_lines())


def family_lines() -> str:
    """Each family (lit_hf/families.py) with the classes `--model` and `--data` take."""
    lines = []
    for name, family in FAMILIES.items():
        lines.append(f"  {name:<22}--model: {', '.join(short(path) for path in family.tasks)}")
        lines.append(f"  {'':<22}--data:  {', '.join(short(path) for path in family.data)}")
    return "\n".join(lines)
