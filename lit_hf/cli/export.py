"""`python -m lit_hf export --config CFG [overrides] --ckpt_path CKPT --export_dir DIR`: a checkpoint exported."""

import warnings
from pathlib import Path
from typing import Any

import lightning as L

from lit_hf.cli.lightning import PARSER_KWARGS, PROG, LitHFCLI, weights_only_choice
from lit_hf.errors import LitHFError
from lit_hf.export import (
    check_export_target,
    check_exportable,
    data_task_params,
    export_pretrained,
    load_checkpoint,
    model_card,
    model_weights,
    run_files,
)


class ExportCLI(LitHFCLI):
    """The run's config and overrides (as for `validate`) plus `--ckpt_path` and `--export_dir`; builds the task
    (and, for its labels and source prefix, the data module) but no Trainer: an export needs no accelerator."""

    def add_arguments_to_parser(self, parser) -> None:  # (LightningArgumentParser)
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="The checkpoint (.ckpt or sharded folder).")
        parser.add_argument(
            "--export_dir", type=str, required=True, help="Where the Hugging Face folder goes: a new or empty folder."
        )
        parser.add_argument(
            "--overwrite", type=bool, default=False, help="Replace an earlier lit_hf export in --export_dir."
        )
        # A run's saved config.yaml (fit's) holds this too, as null; false unpickles the checkpoint in full.
        parser.add_argument(
            "--weights_only", type=bool | None, default=None, help="Load tensors and plain values only (default)."
        )

    def before_instantiate_classes(self) -> None:
        """The export's folder and the checkpoint are checked (and read) before the model loads."""
        config = self.config
        refuse_quantized(config.model.init_args)
        check_export_target(Path(config.export_dir), config.overwrite, "--export_dir", "--overwrite")
        self.checkpoint = load_checkpoint(config.ckpt_path, weights_only_choice(config.weights_only, config.ckpt_path))
        if not isinstance(self.checkpoint, dict) or "state_dict" not in self.checkpoint:
            raise LitHFError(f"--ckpt_path {config.ckpt_path!r} holds no model weights (no state_dict).")
        super().before_instantiate_classes()

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.model = self._get(self.config_init, "model")
        self.datamodule = self._get(self.config_init, "data")


def export_main(args: list[str]) -> Path:
    """`python -m lit_hf export --config CFG [overrides] --ckpt_path CKPT --export_dir DIR`."""
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # main() passes argv without "export"
    cli = ExportCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
        save_config_callback=None,
        parser_kwargs={**PARSER_KWARGS, "prog": f"{PROG} export"},  # a misspelt option is one line, as for `fit`
    )
    task, ckpt_path, checkpoint = check_exportable(cli.model), Path(cli.config.ckpt_path), cli.checkpoint
    task.on_load_checkpoint(checkpoint)
    load_weights(task, checkpoint["state_dict"], ckpt_path)
    metrics, config_yaml = run_files(ckpt_path)
    params = data_task_params(cli.datamodule)  # seq2seq: the source prefix the model learned with
    card = model_card(task, metrics, config_yaml, str(ckpt_path), params)
    target = Path(cli.config.export_dir)
    check_export_target(target, cli.config.overwrite, "--export_dir", "--overwrite")  # again: it may have appeared
    export_pretrained(task, model_weights(task.state_dict()), target, card, params)
    print(f"transformers model saved to {target}")
    return target


def refuse_quantized(task_options: Any) -> None:
    """The export writes full-precision weights: a run config with `quantization` set would be exported as if it
    had been applied. lit_hf converts GPT-2's `Conv1D` layers to `Linear` before quantizing, a model that its own
    class could not load back from a folder, so a quantized folder is refused rather than written."""
    if getattr(task_options, "quantization", None) is not None:
        raise LitHFError(
            "export writes full-precision weights and does not write quantized models: "
            "remove --model.quantization (or set it to null) to export the full-precision model."
        )


def load_weights(task: L.LightningModule, state_dict: dict[str, Any], ckpt_path: Path) -> None:
    """All of the task's weights from the checkpoint, none left over: else it is another task's or model's."""
    try:
        result = task.load_state_dict(state_dict, strict=False)
        problems = [
            f"{len(keys)} {kind} (e.g. {keys[0]})"
            for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
            if keys
        ]
    except RuntimeError as err:  # same names, other shapes
        problems = [str(err).strip().splitlines()[-1].strip()]
    if problems:
        raise LitHFError(
            f"--ckpt_path {str(ckpt_path)!r} does not fit --model {type(task).__name__} from "
            f"{task.hparams.model_name_or_path!r} (weights {'; '.join(problems)}); give the config that trained it."
        )
