"""`python -m lit_hf fit|validate|test|predict --config ...`: LightningCLI with the tokenizer linked to the model."""

import importlib
import inspect
import sys

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from lit_hf.callbacks import ResultsWriter, SavePretrained, TrainMonitor
from lit_hf.errors import LitHFError
from lit_hf.paths import plain


def tokenizer_of(model_name_or_path: str, tokenizer_name: str | None) -> str:
    return tokenizer_name or model_name_or_path


def config_of(model_name_or_path: str, config_name: str | None) -> str:
    return config_name or model_name_or_path


def class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


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
        for name in ("revision", "cache_dir", "trust_remote_code"):
            parser.link_arguments(f"model.init_args.{name}", f"data.init_args.{name}")
        parser.link_arguments("data.init_args.task_name", "model.init_args.glue_task")  # classification metrics

    def before_instantiate_classes(self) -> None:
        """Values the data decides join the task's arguments before the task is built.

        A classifier's labels come from its data module (not a `link_arguments(..., apply_on="instantiate")`:
        that would hand `label_names` to tasks without it, e.g. a causal LM restored with `--ckpt_path`); the data
        module's constructor does no I/O and `label_names` reads the label column of the user's files, once.
        Generation length follows the data's target length unless the task sets `max_new_tokens`.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        what_runs(config.trainer)
        model, data = config.model.init_args, config.data.init_args
        for args in (model, data):  # path types resolved where they were parsed; constructors get plain strings
            for key in list(args.keys()):
                args[key] = plain(args[key])
        if "label_names" in inspect.signature(class_of(config.model.class_path)).parameters:
            module = class_of(config.data.class_path)(**data.as_dict())
            model.label_names = getattr(module, "label_names", None)
            model.regression = getattr(module, "regression", False)
        if "max_new_tokens" in model and model.max_new_tokens is None and "max_target_length" in data:
            model.max_new_tokens = data.get("val_max_target_length") or data.max_target_length


def what_runs(trainer) -> None:  # noqa: ANN001 (the trainer's Namespace)
    """Options Lightning 2 refuses or silently replaces become what runs, in the config that `config.yaml` saves,
    each said in one line: `strategy=dp` (DataParallel is gone from Lightning 2), `strategy=fsdp` (FSDP2, which
    runs on CPUs too) and `16-mixed` on a CPU."""
    if trainer.get("strategy") == "dp":
        say(
            "--trainer.strategy=dp runs as ddp over the same devices: Lightning 2 removed DataParallel, "
            "which was slower, and DDP computes the same result."
        )
        trainer.strategy = "ddp"
    if trainer.get("strategy") == "fsdp":
        say(
            "--trainer.strategy=fsdp runs as lit_hf.sharding.ShardedStrategy: PyTorch FSDP2 per transformer block, "
            "on GPUs or CPUs (Lightning's FSDPStrategy refuses CPUs)."
        )
        trainer.strategy = Namespace(class_path="lit_hf.sharding.ShardedStrategy", init_args=Namespace())
    if str(trainer.get("precision")) in ("16", "16-mixed") and runs_on_cpu(trainer.get("accelerator")):
        say("--trainer.precision=16-mixed runs as bf16-mixed: a CPU has no float16 autocast.")
        trainer.precision = "bf16-mixed"


def runs_on_cpu(accelerator: object) -> bool:
    if accelerator in (None, "auto"):
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"


@rank_zero_only
def say(line: str) -> None:
    print(f"lit_hf: {line}", flush=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of `lit-hf` and `python -m lit_hf`; user mistakes end with one line and exit status 2."""
    try:
        LitHFCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # each task configures its own AdamW and schedule
            trainer_defaults={"callbacks": [ResultsWriter(), TrainMonitor(), SavePretrained()]},
            args=args,
        )
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"lit_hf: error: {cause}", file=sys.stderr)
        sys.exit(2)


def user_error(err: BaseException) -> LitHFError | None:
    """The LitHFError behind `err`, if any: jsonargparse re-raises constructor errors as a plain ValueError."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, LitHFError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
