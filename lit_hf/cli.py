"""`python -m lit_hf fit|validate|test|predict --config ...`: LightningCLI with the tokenizer linked to the model."""

import sys

from lightning.pytorch.cli import LightningCLI

from lit_hf.callbacks import ResultsWriter, TrainMonitor
from lit_hf.errors import LitHFError


def tokenizer_of(model_name_or_path: str, tokenizer_name: str | None) -> str:
    return tokenizer_name or model_name_or_path


def config_of(model_name_or_path: str, config_name: str | None) -> str:
    return config_name or model_name_or_path


class LitHFCLI(LightningCLI):
    """Any lit_hf task (`--model`) with any lit_hf data module (`--data`), both chosen by class path."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (LightningArgumentParser)
        # The user names the model once; the data module loads the same tokenizer and reads the same config.
        parser.link_arguments(
            ("model.init_args.model_name_or_path", "model.init_args.tokenizer_name"),
            "data.init_args.tokenizer_name_or_path",
            compute_fn=tokenizer_of,
        )
        parser.link_arguments(
            ("model.init_args.model_name_or_path", "model.init_args.config_name"),
            "data.init_args.config_name_or_path",
            compute_fn=config_of,
        )
        for name in ("revision", "trust_remote_code"):
            parser.link_arguments(f"model.init_args.{name}", f"data.init_args.{name}")

    def before_instantiate_classes(self) -> None:
        """Generation length follows the data's target length unless the task sets its own (`max_new_tokens`)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        model, data = config.model.init_args, config.data.init_args
        if "max_new_tokens" in model and model.max_new_tokens is None and "max_target_length" in data:
            model.max_new_tokens = data.get("val_max_target_length") or data.max_target_length


def main(args: list[str] | None = None) -> None:
    """Entry point of `lit-hf` and `python -m lit_hf`; user mistakes end with one line and exit status 2."""
    try:
        LitHFCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={"callbacks": [ResultsWriter(), TrainMonitor()]},
            args=args,
        )
    except LitHFError as err:
        print(f"lit_hf: error: {err}", file=sys.stderr)
        sys.exit(2)
