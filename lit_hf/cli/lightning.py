"""`python -m lit_hf fit|validate|test|predict --config ...`: LightningCLI with the tokenizer linked to the model, the
data's choices given to the task, and every option checked before anything is built."""

import dataclasses
import os
import sys
import typing
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser, DefaultHelpFormatter, Namespace, set_parsing_settings
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_hf import checks, trust
from lit_hf.atomic import AtomicCheckpointIO
from lit_hf.callbacks import FinalValidation, OneLineSummary, ResultsWriter, SavePretrained, TrainMonitor
from lit_hf.cli.errors import check_config_files, explain_parse_error, option_strings
from lit_hf.cli.help_cache import help_columns
from lit_hf.contracts import CalibrationData, DataForTask
from lit_hf.errors import ConfigError, LitHFError, first_line, say, user_error
from lit_hf.export import check_export_target
from lit_hf.families import FAMILIES, class_paths, load
from lit_hf.machine import (
    BF16_PRECISIONS,
    cpu_flags,
    cpu_precision,
    processes_on_node,
    set_cpu_threads,
    strict_precision,
)
from lit_hf.options import LoraOptions, grouped_hparams
from lit_hf.paths import plain
from lit_hf.resume import FitLoopResume, RandomState, last_checkpoint
from lit_hf.runs import checkpoint_run, last_to_evaluate, named_logger, older_runs_last, run_logger


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, wrapped at the terminal's width up to 80 columns (`help_cache.help_columns`): prose
    reads best at that width, and every wider terminal gets the one text shipped in lit_hf/cli/help/."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, help_columns() - 2 if width is None else width)


# Every parser lit_hf builds: a parse error reaches `parse_arguments` as an exception (one line, not argparse's usage),
# an option is taken only as written (argparse would take `--trainer.max_epoch` for `--trainer.max_epochs`), and
# the help has one width on every terminal at least 80 columns wide. Subcommands' parsers inherit them.
PARSER_KWARGS = {"exit_on_error": False, "allow_abbrev": False, "formatter_class": HelpFormatter}
PROG = "python -m lit_hf"  # the command as the docs write it, in every usage line

# The option groups' attribute docstrings are their `--help` lines (`--model.optim.learning_rate`).
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def build(cls: type, args: dict[str, Any]) -> Any:
    """`cls(**args)` with its option groups (dataclass parameters: `hub`) made from their dicts."""
    hints = typing.get_type_hints(cls.__init__)
    groups = {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    return cls(**{key: groups[key](**value) if key in groups else value for key, value in args.items()})


class LitHFCLI(LightningCLI):
    """Any lit_hf task (`--model`) with any lit_hf data module (`--data`), both chosen by class path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """LightningCLI's, which parses, builds and runs the subcommand; a run stopped by a user error leaves no new,
        empty `version_N/` behind, and the processes it started are stopped."""
        for path in class_paths("tasks") + class_paths("data"):  # jsonargparse resolves `--model=CausalLMTask` and
            load(path)  # lists `--model`'s choices among the subclasses imported so far
        try:
            super().__init__(*args, **kwargs)
        except Exception as err:
            if user_error(err) is not None and hasattr(self, "_fresh_log_dir"):  # the subcommand had started
                if self.trainer.is_global_zero:
                    checks.remove_if_empty(*self._fresh_log_dir)
                stop_started_processes(self.trainer)
            raise

    def add_arguments_to_parser(self, parser) -> None:  # (LightningArgumentParser)
        # The user names the model once; the data module loads the same tokenizer (or image processor) and config.
        for name in ("model_name_or_path", "hub"):
            parser.link_arguments(f"model.init_args.{name}", f"data.init_args.{name}")
        for family in FAMILIES.values():  # a family's own links (text classification: the GLUE task's metrics)
            for source, target in family.links:
                parser.link_arguments(f"data.init_args.{source}", f"model.init_args.{target}")
        parser.add_lightning_class_args(SavePretrained, "save_pretrained")  # --save_pretrained.enabled=false

    def before_instantiate_classes(self) -> None:
        """The `--ckpt_path` checkpoint's options join the config (`_checkpoint_options`), trainer options out of
        range and output folders that cannot be written are refused, and values the data decides join the task's
        arguments (`_link_data_to_task`), before anything is built. `validate`/`test`/`predict --ckpt_path=last` is
        the checkpoint found first, so that it is read and placed as the path given would be (`lit_hf.runs`)."""
        if self.subcommand and (found := last_to_evaluate(self.subcommand, self.config[self.subcommand])):
            self.config[self.subcommand].ckpt_path = found
        self._checkpoint_options()
        config = self.config[self.subcommand] if self.subcommand else self.config
        saving = config.get("save_pretrained")
        if self.subcommand == "fit" and saving and saving.enabled and saving.export_dir:  # before the model loads
            folder, overwrite = Path(saving.export_dir), saving.overwrite
            check_export_target(folder, overwrite, "--save_pretrained.export_dir", "--save_pretrained.overwrite")
        what_runs(config.trainer)
        set_cpu_threads(processes_on_node(config.trainer.get("accelerator"), config.trainer.get("devices")))
        checks.check_trainer(config.trainer)
        checks.check_devices(config.trainer.accelerator, config.trainer.devices)
        if self.subcommand:  # `export` writes only its --export_dir
            checks.check_output_dirs(config.trainer)
        self._run_folder = checkpoint_run(self.subcommand, config.trainer, config.get("ckpt_path"))
        if self._run_folder is not None:  # validate/test/predict of a run's checkpoint write into that run
            checks.check_output_dir("--ckpt_path's run folder", str(self._run_folder))
        if self.subcommand == "predict":
            checks.check_predicts(load(config.model.class_path), load(config.data.class_path))
        for args in (config.model.init_args, config.data.init_args):  # path types resolved where they were parsed;
            for key in list(args.keys()):  # constructors get plain strings
                args[key] = plain(args[key])
        # The family table's refusal first; the link's own check is for user classes outside the table.
        checks.check_family(load(config.model.class_path), load(config.data.class_path))
        self._link_data_to_task(config)

    def _link_data_to_task(self, config: Namespace) -> None:
        """The task options the data decides (`DataForTask.task_arguments`: labels, generation length), except
        those the user gave; the data module's constructor does no I/O, and labels are read from the files once."""
        module = build(load(config.data.class_path), config.data.init_args.as_dict())
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
        self._start("fit")

    def before_validate(self) -> None:
        self._start("validate")

    def before_test(self) -> None:
        self._start("test")

    def before_predict(self) -> None:
        self._start("predict")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Runs log to `lightning_logs/<task>-<model>/version_N`, and with a run's checkpoint validate/test/predict
        into that run, unless the user chose a logger (`lit_hf.runs`); trainer options Lightning refuses (with a
        traceback from inside the Trainer) end in one line."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if getattr(self, "_run_folder", None) is not None:
            kwargs["logger"] = run_logger(self._run_folder, self.subcommand)
        elif (logger := named_logger(config.trainer, config.model)) is not None:
            kwargs["logger"] = logger
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:
            raise ConfigError(f"--trainer: {first_line(err)}") from err

    def after_instantiate_classes(self) -> None:
        """Checkpoints are renamed into place, so a kill never leaves half of one (set here rather than as a
        `plugins` default: an instance there cannot be written to config.yaml, and a user's own plugin wins).
        `--trainer.enable_model_summary=false` (or `barebones`) drops lit_hf's one-line summary: Lightning keeps
        any `ModelSummary` among the callbacks, as it keeps one the user gave."""
        super().after_instantiate_classes()
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        options = (self.config_init[self.subcommand] if self.subcommand else self.config_init).trainer
        if options.get("enable_model_summary") is False or options.get("barebones"):
            trainer.callbacks = [callback for callback in trainer.callbacks if not isinstance(callback, OneLineSummary)]

    def parse_arguments(self, parser, args) -> None:  # (LightningArgumentParser, ArgsType)
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
        """Nothing: `_checkpoint_options` does this, from `before_instantiate_classes`. Overridden because Lightning
        offers no public way to turn its own off (its constructor calls it right after parsing), and its own reads
        any file that exists and puts the checkpoint's options in place of the user's without a word."""

    def _checkpoint_options(self) -> None:
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

    def _start(self, subcommand: str) -> None:
        """Before the subcommand runs: its log folder is noted if it is new (removed again if a user error stops the
        run, `__init__`), and the checkpoint to load is found and checked."""
        self._fresh_log_dir = checks.new_log_dir(self.trainer)
        self._checkpoint_to_load(subcommand)
        self._link_calibration(subcommand)

    def _link_calibration(self, subcommand: str) -> None:
        """With `quantization.calibration_batches`, the task's quantized evaluation gets its calibration batches from
        the data module (which prepares that split with the stage's own)."""
        quantized = getattr(self.model, "quantized", None)
        if quantized is None or quantized.options.calibration_batches is None:
            return
        if subcommand not in ("validate", "test"):
            raise ConfigError(
                f"quantization.calibration_batches calibrates before validate and test, not {subcommand}: leave it "
                f"out of {subcommand} (a fit's checkpoint validates with it: --ckpt_path)."
            )
        if not isinstance(self.datamodule, CalibrationData):
            raise ConfigError(f"quantization.calibration_batches needs a lit_hf data module, not {self.datamodule}.")
        quantized.calibration = self.datamodule.calibrate_on(quantized.options.calibration_split)

    def _checkpoint_to_load(self, subcommand: str) -> None:
        """`--ckpt_path=last` is the newest `last.ckpt` of earlier runs of the same task and model (Lightning looks
        only in this run's new `version_N` folder). A fit without one starts afresh, as Lightning's does; validate,
        test and predict stop, since they would score the untrained weights; a `last.ckpt` only in a run folder of
        before runs were named stops both (`refuse_older_runs`). The checkpoint's weights must then fit the model."""
        config = self.config_init[subcommand]
        if config.get("ckpt_path") == "best":  # Lightning's name for the best checkpoint of a fit in this process
            raise LitHFError(
                "--ckpt_path=best names the best checkpoint of a fit in the same process, and a command runs one "
                "subcommand; give the checkpoint file (a run's checkpoints/*.ckpt) or 'last'."
            )
        if config.get("ckpt_path") == "last":
            found = last_checkpoint(self.trainer)
            if found is None:
                refuse_older_runs(self.trainer)
            if found is None and subcommand != "fit":
                runs = getattr(self.trainer.logger, "root_dir", None) or self.trainer.default_root_dir
                raise LitHFError(
                    f"--ckpt_path=last: no last.ckpt under {runs} (nothing of this task and model was trained "
                    f"there); give the checkpoint file, or the --trainer.default_root_dir of the fit that wrote it."
                )
            config["ckpt_path"] = found or "last"
        if checks.is_local_checkpoint(config.get("ckpt_path")) and os.path.isfile(config["ckpt_path"]):
            weights_only = config.get("weights_only") is not False  # an explicit false was said back at parse time
            checks.check_checkpoint_weights(config["ckpt_path"], self.model, weights_only)


def refuse_older_runs(trainer: Trainer) -> None:
    """`--ckpt_path=last` found nothing in this run's named folder, but a run folder from before runs were named
    (`lightning_logs/version_N`) holds a `last.ckpt`: its model is unknown, so the user says whether it is meant."""
    runs = getattr(trainer.logger, "root_dir", None)
    older = older_runs_last(Path(runs)) if runs and Path(runs).parent.name == "lightning_logs" else None
    if older is not None:
        raise LitHFError(
            f"--ckpt_path=last: {runs} holds no last.ckpt; {older} is from a run folder of before runs were named "
            "after task and model: give it as --ckpt_path to go on from it, or move the version_N folders out of "
            f"{Path(runs).parent} to start afresh."
        )


def group_help(group: type, key: str) -> None:
    """Prints an optional group's options with their help and exits: jsonargparse lists `--model.lora.help` inside
    `--model.help` but cannot reach it from the command line (the task's parser is nested in `--model`)."""
    usage = f"python -m lit_hf fit --{key}.NAME VALUE ... (or --{key}={{}})"
    parser = ArgumentParser(usage=usage, add_help=False, allow_abbrev=False, formatter_class=HelpFormatter)
    parser.add_class_arguments(group, key)
    parser.print_help()
    sys.exit(0)


def what_runs(trainer) -> None:  # (the trainer's Namespace)
    """Options Lightning 2 refuses or silently replaces become what runs, in the config that `config.yaml` saves,
    each said in one line: `strategy=dp` (DataParallel is gone from Lightning 2), `strategy=fsdp` (FSDP2, which
    runs on CPUs too), `16-mixed` on a CPU, and bfloat16 on a CPU without it (lit_hf/machine.py)."""
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
    if runs_on_cpu(trainer.get("accelerator")) and str(trainer.get("precision")) in BF16_PRECISIONS:
        trainer.precision = cpu_precision(str(trainer.precision), cpu_flags(), strict_precision())


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
    parser = ArgumentParser(**PARSER_KWARGS)
    parser.add_class_arguments(load(class_path), "task")
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


def run_lightning(args: list[str] | None) -> None:
    """`fit`, `validate`, `test` or `predict` (`args`: the command line, None for sys.argv's)."""
    LitHFCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # each task configures its own AdamW and schedule
        trainer_defaults={
            "callbacks": [
                ResultsWriter(),
                TrainMonitor(),
                RandomState(),
                FitLoopResume(),
                FinalValidation(),
                OneLineSummary(),
            ]
        },  # fmt: skip
        parser_kwargs={**PARSER_KWARGS, "prog": PROG},  # argparse's own name for it would be `__main__.py`
        args=args,
    )


def stop_started_processes(trainer: Trainer) -> None:
    """After a user error, the processes this one started (Lightning's subprocess launcher, on each node's local
    rank 0) are stopped: they wait for it in a collective, and would each end in a gloo traceback, or with NCCL
    wait until its timeout."""
    for process in getattr(trainer.strategy.launcher, "procs", []):
        process.kill()
        process.wait()
