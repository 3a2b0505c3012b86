"""`python -m lit_hf fit|validate|test|predict --config ...`: LightningCLI with the tokenizer linked to the model."""

import dataclasses
import importlib
import os
import sys
import typing
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser, Namespace, set_parsing_settings
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lit_hf import checks, trust
from lit_hf.atomic import AtomicCheckpointIO
from lit_hf.callbacks import ResultsWriter, SavePretrained, TrainMonitor
from lit_hf.cli_errors import check_config_files, explain_parse_error, option_strings
from lit_hf.contracts import DataForTask
from lit_hf.errors import ConfigError, LitHFError, first_line, say
from lit_hf.export import check_export_target
from lit_hf.options import LoraOptions, grouped_hparams
from lit_hf.paths import plain
from lit_hf.resume import FitLoopResume, RandomState, last_checkpoint

# How gloo says that another process of the run went away (its socket closed) while this one waited in a collective.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer")

# The option groups' attribute docstrings are their `--help` lines (`--model.optim.learning_rate`).
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build(cls: type, args: dict[str, Any]) -> Any:
    """`cls(**args)` with its option groups (dataclass parameters: `hub`) made from their dicts."""
    hints = typing.get_type_hints(cls.__init__)
    groups = {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    return cls(**{key: groups[key](**value) if key in groups else value for key, value in args.items()})


class LitHFCLI(LightningCLI):
    """Any lit_hf task (`--model`) with any lit_hf data module (`--data`), both chosen by class path."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (LightningArgumentParser)
        # The user names the model once; the data module loads the same tokenizer (or image processor) and config.
        for name in ("model_name_or_path", "hub"):
            parser.link_arguments(f"model.init_args.{name}", f"data.init_args.{name}")
        parser.link_arguments("data.init_args.task_name", "model.init_args.glue_task")  # classification metrics
        parser.add_lightning_class_args(SavePretrained, "save_pretrained")  # --save_pretrained.enabled=false

    def before_instantiate_classes(self) -> None:
        """Trainer options out of range and output folders that cannot be written are refused, and values the data
        decides join the task's arguments (`_link_data_to_task`), before anything is built."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        saving = config.get("save_pretrained")
        if self.subcommand == "fit" and saving and saving.enabled and saving.export_dir:  # before the model loads
            folder, overwrite = Path(saving.export_dir), saving.overwrite
            check_export_target(folder, overwrite, "--save_pretrained.export_dir", "--save_pretrained.overwrite")
        what_runs(config.trainer)
        checks.check_trainer(config.trainer)
        checks.check_devices(config.trainer.accelerator, config.trainer.devices)
        if self.subcommand:  # `export` writes only its --export_dir
            checks.check_output_dirs(config.trainer)
        if self.subcommand == "predict":
            checks.check_predicts(class_of(config.model.class_path), class_of(config.data.class_path))
        model, data = config.model.init_args, config.data.init_args
        for args in (model, data):  # path types resolved where they were parsed; constructors get plain strings
            for key in list(args.keys()):
                args[key] = plain(args[key])
        self._link_data_to_task(config)

    def _link_data_to_task(self, config: Namespace) -> None:
        """The task options the data decides (`DataForTask.task_arguments`: labels, generation length), except
        those the user gave; the data module's constructor does no I/O, and labels are read from the files once."""
        module = build(class_of(config.data.class_path), config.data.init_args.as_dict())
        if not isinstance(module, DataForTask):
            raise ConfigError(
                f"--data={config.data.class_path} is not a lit_hf data module (it lacks task_arguments and "
                "export_params, docs/architecture.md); give one of lit_hf.data's."
            )
        model = config.model.init_args
        given = set(command_line_options(getattr(self, "_command_line", []), "model"))
        given |= changed_options(config.model.class_path, model)
        for name, value in module.task_arguments().items():
            if name not in model:
                raise ConfigError(
                    f"--data={config.data.class_path} decides {name}, which --model={config.model.class_path} does "
                    "not take: the data module is another family's; give the data module of the task's family."
                )
            if name not in given:
                model[name] = value

    def before_fit(self) -> None:
        self._checkpoint_to_load("fit")

    def before_validate(self) -> None:
        self._checkpoint_to_load("validate")

    def before_test(self) -> None:
        self._checkpoint_to_load("test")

    def before_predict(self) -> None:
        self._checkpoint_to_load("predict")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Trainer options Lightning refuses (with a traceback from inside the Trainer) end in one line."""
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:
            raise ConfigError(f"--trainer: {first_line(err)}") from err

    def after_instantiate_classes(self) -> None:
        """Checkpoints are renamed into place, so a kill never leaves half of one (set here rather than as a
        `plugins` default: an instance there cannot be written to config.yaml, and a user's own plugin wins)."""
        super().after_instantiate_classes()
        strategy = getattr(self, "trainer", None) and self.trainer.strategy
        if strategy is not None and type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (LightningArgumentParser, ArgsType)
        """jsonargparse's error (some 60 lines) becomes one line naming the option and its close matches; the
        `--config` files are read first, to name the file and the cause of what jsonargparse could not read."""
        self._command_line = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        check_config_files(self._command_line)
        if any(arg.split("=")[0] == "--model.lora.help" for arg in self._command_line):
            group_help(LoraOptions, "model.lora")
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(explain_parse_error(str(err), option_strings(parser))) from err

    def _parse_ckpt_path(self) -> None:
        """`--ckpt_path` must be a complete checkpoint of the `--model` task, loadable without running code; its
        hyperparameters join the config, except the model options the user gave and `trust_remote_code`
        (`lit_hf.trust.checkpoint_choices`).

        Lightning's own version reads any file that exists and puts the checkpoint's task in place of `--model`
        without a word, so a classifier's checkpoint under `--model=CausalLMTask` failed deep in the loss.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not checks.is_local_checkpoint(ckpt_path):
            return
        weights_only = weights_only_choice(self.config[subcommand].get("weights_only"), ckpt_path)
        hparams = grouped_hparams(checks.checkpoint_hparams(ckpt_path, weights_only))  # flat: before the groups
        hparams.pop("_instantiator", None)
        given = self.config[subcommand].get("model")
        checks.check_checkpoint_task(ckpt_path, hparams.get("_class_path"), getattr(given, "class_path", None))
        if not hparams:
            return
        # The command line's own --model options win over the checkpoint's
        # (`predict --model.generation.max_new_tokens=16`).
        named = command_line_options(getattr(self, "_command_line", []), "model")
        init_args = self.config[subcommand].model.init_args
        chosen = set(named) | changed_options(given.class_path, init_args)
        hparams = trust.checkpoint_choices(ckpt_path, hparams, init_args, chosen)
        explicit = {key: init_args[key] for key in named if key in init_args}
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as err:
            message = explain_parse_error(str(err), [])
            raise LitHFError(f"The hyperparameters in --ckpt_path {ckpt_path!r} do not parse: {message}") from err
        for key, value in explicit.items():
            self.config[subcommand].model.init_args[key] = value

    def _run_subcommand(self, subcommand: str) -> None:
        """A run stopped by a user error leaves no new, empty `version_N/` behind."""
        fresh = checks.new_log_dir(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            if user_error(err) is not None and self.trainer.is_global_zero:
                checks.remove_if_empty(*fresh)
            if user_error(err) is not None:
                stop_started_processes(self.trainer)
            raise

    def _checkpoint_to_load(self, subcommand: str) -> None:
        """`--ckpt_path=last` is the newest `last.ckpt` of earlier runs (Lightning looks only in this run's new
        `version_N` folder). A fit without one starts afresh, as Lightning's does; validate, test and predict stop,
        since they would score the untrained weights. The checkpoint's weights must then fit the model."""
        config = self.config_init[subcommand]
        if config.get("ckpt_path") == "best":  # Lightning's name for the best checkpoint of a fit in this process
            raise LitHFError(
                "--ckpt_path=best names the best checkpoint of a fit in the same process, and a command runs one "
                "subcommand; give the checkpoint file (a run's checkpoints/*.ckpt) or 'last'."
            )
        if config.get("ckpt_path") == "last":
            found = last_checkpoint(self.trainer)
            if found is None and subcommand != "fit":
                raise LitHFError(
                    f"--ckpt_path=last: no last.ckpt under {self.trainer.default_root_dir} (nothing was trained "
                    f"there); give the checkpoint file, or the --trainer.default_root_dir of the fit that wrote it."
                )
            config["ckpt_path"] = found or "last"
        if checks.is_local_checkpoint(config.get("ckpt_path")) and os.path.isfile(config["ckpt_path"]):
            weights_only = config.get("weights_only") is not False  # an explicit false was said back at parse time
            checks.check_checkpoint_weights(config["ckpt_path"], self.model, weights_only)


def group_help(group: type, key: str) -> None:
    """Prints an optional group's options with their help and exits: jsonargparse lists `--model.lora.help` inside
    `--model.help` but cannot reach it from the command line (the task's parser is nested in `--model`)."""
    parser = ArgumentParser(usage=f"python -m lit_hf fit --{key}.NAME VALUE ... (or --{key}={{}})", add_help=False)
    parser.add_class_arguments(group, key)
    parser.print_help()
    sys.exit(0)


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


def command_line_options(args: list[str], section: str) -> list[str]:
    """The `--section.name` (or `--section.init_args.name`) options given on a command line, by name."""
    names = []
    for arg in args:
        if arg.startswith(f"--{section}."):
            name = arg.split("=", 1)[0].removeprefix(f"--{section}.").removeprefix("init_args.")
            names.append(name)
    return names


def changed_options(class_path: str, init_args: Namespace) -> set[str]:
    """The names of `init_args` (dotted into option groups) whose values differ from the class's defaults: options
    the config file set (or the command line, named or not)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(class_of(class_path), "task")
    defaults = parser.get_defaults().task
    return {name for name in init_args.keys() if name in defaults and init_args[name] != defaults[name]}


def weights_only_choice(value: bool | None, ckpt_path: str) -> bool:
    """`--weights_only` as torch.load gets it: true unless the user said false, which is said back in one line."""
    if value is False:
        say(
            f"--weights_only=false: --ckpt_path {ckpt_path!r} is unpickled in full, which runs any code it holds; "
            "only for checkpoints you made yourself."
        )
    return value is not False


def main(args: list[str] | None = None) -> None:
    """Entry point of `lit-hf` and `python -m lit_hf`; user mistakes end with one line and exit status 2."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["download"]:  # a hub command, not a Lightning subcommand
        from lit_hf.download import main as download

        return download(argv[1:])
    try:
        if argv[:1] == ["export"]:  # no Trainer subcommand: `export` builds the task only (lit_hf/export_command.py)
            from lit_hf.export_command import export_main  # it subclasses LitHFCLI, so it imports this module

            export_main(argv[1:])
            return
        if argv[:1] == ["lm-eval"]:  # no Trainer loop: lm-evaluation-harness on the task's model (lit_hf/harness.py)
            from lit_hf.harness import lm_eval_main

            lm_eval_main(argv[1:])
            return
        LitHFCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # each task configures its own AdamW and schedule
            trainer_defaults={"callbacks": [ResultsWriter(), TrainMonitor(), RandomState(), FitLoopResume()]},
            parser_kwargs={"exit_on_error": False},  # parse errors reach `parse_arguments` as exceptions
            args=args,
        )
        close_process_group()
    except Exception as err:
        cause = user_error(err)
        if cause is None and rank_zero_only.rank != 0 and peer_lost(err):
            sys.exit(1)  # another process ended first (a user error, a crash, a kill): its output says why
        if cause is None:
            raise
        if rank_zero_only.rank == 0:  # every process meets the same mistake; one says so
            print(f"lit_hf: error: {cause}", file=sys.stderr)
        sys.exit(2)


def close_process_group() -> None:
    """After a command that succeeded, the process group is destroyed while everything is still alive, as torch's
    documentation asks of every process; left to interpreter shutdown, a 2-process gloo fit once ended both ranks
    with "terminate called without an active exception" (exit status 134) after finishing its work. Not after a
    failure: ranks still inside a collective would wait for the failed one forever."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def stop_started_processes(trainer: Trainer) -> None:
    """After a user error, the processes this one started (Lightning's subprocess launcher, on each node's local
    rank 0) are stopped: they wait for it in a collective, and would each end in a gloo traceback, or with NCCL
    wait until its timeout."""
    for process in getattr(trainer.strategy.launcher, "procs", []):
        process.kill()
        process.wait()


def peer_lost(err: BaseException) -> bool:
    """Whether `err` (or its cause) is a collective that failed because another process went away."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, RuntimeError) and any(text in str(seen) for text in PEER_LOST):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def user_error(err: BaseException) -> LitHFError | None:
    """The LitHFError behind `err`, if any: jsonargparse re-raises constructor errors as a plain ValueError."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, LitHFError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
