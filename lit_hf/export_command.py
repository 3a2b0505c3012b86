"""`python -m lit_hf export --config CFG [overrides] --ckpt_path CKPT --export_dir DIR`: a checkpoint exported."""

import warnings
from pathlib import Path
from typing import Any

import lightning as L

from lit_hf.cli import LitHFCLI
from lit_hf.errors import LitHFError
from lit_hf.export import data_task_params, export_pretrained, load_checkpoint, model_card, model_weights, run_files


class ExportCLI(LitHFCLI):
    """The run's config and overrides (as for `validate`) plus `--ckpt_path` and `--export_dir`; builds the task
    (and, for its labels and source prefix, the data module) but no Trainer: an export needs no accelerator."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (LightningArgumentParser)
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="The checkpoint (.ckpt or sharded folder).")
        parser.add_argument("--export_dir", type=str, required=True, help="Where the Hugging Face folder goes.")
        # A run's saved config.yaml (fit's) holds this too; only weights and plain values are loaded when true.
        parser.add_argument("--weights_only", type=bool | None, default=None, help="torch.load's weights_only.")

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.model = self._get(self.config_init, "model")
        self.datamodule = self._get(self.config_init, "data")


def export_main(args: list[str]) -> Path:
    """`python -m lit_hf export --config CFG [overrides] --ckpt_path CKPT --export_dir DIR`."""
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # main() passes argv without "export"
    cli = ExportCLI(subclass_mode_model=True, subclass_mode_data=True, run=False, args=args, save_config_callback=None)
    task, ckpt_path = cli.model, Path(cli.config.ckpt_path)
    checkpoint = load_checkpoint(ckpt_path, weights_only=bool(cli.config.weights_only))
    if "state_dict" not in checkpoint:
        raise LitHFError(f"--ckpt_path {str(ckpt_path)!r} holds no model weights (no state_dict).")
    task.on_load_checkpoint(checkpoint)
    load_weights(task, checkpoint["state_dict"], ckpt_path)
    metrics, config_yaml = run_files(ckpt_path)
    params = data_task_params(cli.datamodule)  # seq2seq: the source prefix the model learned with
    card = model_card(task, metrics, config_yaml, str(ckpt_path), params)
    target = export_pretrained(task, model_weights(task.state_dict()), Path(cli.config.export_dir), card, params)
    print(f"transformers model saved to {target}")
    return target


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
