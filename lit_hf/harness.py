"""`python -m lit_hf lm-eval --config CFG [--ckpt_path CKPT] --tasks T1,T2`: a run's model through EleutherAI's
lm-evaluation-harness (`lm_eval`), in memory, on one device."""

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from peft import PeftModel

from lit_hf.atomic import write_text
from lit_hf.cli.export import load_weights
from lit_hf.cli.lightning import PARSER_KWARGS, PROG, LitHFCLI
from lit_hf.errors import LitHFError, say
from lit_hf.export import load_checkpoint

INSTALL = 'lm-eval needs lm-evaluation-harness: pip install -e ".[eval]" (or pip install "lm-eval[hf]>=0.4.13").'
# The trainer's precision as the harness runs it: autocast for the mixed ones, weights cast for the true ones.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
CAST = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


class LmEvalCLI(LitHFCLI):
    """The run's config and overrides (as for `validate`) plus `--ckpt_path` and the harness's own options; builds
    the task and a Trainer (its device, precision and logger) but runs no Lightning loop."""

    def add_arguments_to_parser(self, parser) -> None:  # (LightningArgumentParser)
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="A checkpoint (.ckpt or sharded folder); default: the weights of "
                                 "--model.model_name_or_path as loaded (an exported folder, a hub model).")  # fmt: skip
        parser.add_argument("--tasks", type=str, required=True, help="lm-eval task names, comma-separated.")
        parser.add_argument("--num_fewshot", type=int | None, default=None, help="Few-shot examples per prompt.")
        parser.add_argument("--batch_size", type=int, default=1, help="Requests per forward pass.")
        parser.add_argument("--limit", type=float | None, default=None,
                            help="At most this many documents per task (below 1: a fraction).")  # fmt: skip
        parser.add_argument("--include_path", type=str | None, default=None, help="A folder of your own task YAMLs.")
        parser.add_argument("--bootstrap_iters", type=int, default=100000, help="lm-eval's stderr bootstrap.")
        parser.add_argument("--weights_only", type=bool | None, default=None, help="torch.load's weights_only.")

    def before_instantiate_classes(self) -> None:
        """After parsing (a command that does not parse says so first) and before the model loads: lm-eval is
        installed and knows every task."""
        if importlib.util.find_spec("lm_eval") is None:
            raise LitHFError(INSTALL)
        self.harness_tasks = harness_tasks(self.config.tasks, self.config.include_path)
        super().before_instantiate_classes()


def lm_eval_main(args: list[str]) -> Path:
    """`python -m lit_hf lm-eval ...`: the results written to a new log folder; returns it."""
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # main() passes argv without "lm-eval"
    cli = LmEvalCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
        save_config_callback=None,
        parser_kwargs={**PARSER_KWARGS, "prog": f"{PROG} lm-eval"},
    )
    task, config = cli.model, cli.config
    if config.ckpt_path:
        load_task_weights(task, Path(config.ckpt_path), bool(config.weights_only))
    model = evaluated_model(task, cli.trainer)
    if cli.trainer.num_devices > 1:
        say(f"lm-eval runs on one process and device ({model.device}); validate is lit_hf's exact N-process one.")
    results = evaluate(model, task.tokenizer, *cli.harness_tasks, config, AUTOCAST.get(str(cli.trainer.precision)))
    return write_results(cli.trainer, results)


def load_task_weights(task: L.LightningModule, ckpt_path: Path, weights_only: bool) -> None:
    """The checkpoint's weights into the task, as `export` loads them (sharded folders consolidated, adapters)."""
    checkpoint = load_checkpoint(ckpt_path, weights_only=weights_only)
    if "state_dict" not in checkpoint:
        raise LitHFError(f"--ckpt_path {str(ckpt_path)!r} holds no model weights (no state_dict).")
    task.on_load_checkpoint(checkpoint)
    load_weights(task, checkpoint["state_dict"], ckpt_path)


def evaluated_model(task: L.LightningModule, trainer: L.Trainer) -> torch.nn.Module:
    """The task's model as the harness gets it: LoRA adapters merged into the weights, the true precisions' dtype,
    in eval mode on the trainer's first device."""
    model = task.model
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()  # plain transformers weights, as a merged export holds them
    if (dtype := CAST.get(str(trainer.precision))) is not None:
        model = model.to(dtype)
    return model.eval().to(trainer.strategy.root_device)


def harness_tasks(tasks: str, include_path: str | None) -> tuple[Any, list[str]]:
    """lm-eval's `TaskManager` for the comma-separated `tasks` and their names. Indexing lm-eval's thousands of
    built-in tasks takes seconds (16 s on 2 busy cores), so when `include_path` holds every task it is read alone."""
    from lm_eval.tasks import TaskManager  # slow to import: only this command pays

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or not all(manager.match_tasks([name]) for name in names):
        manager = TaskManager(include_path=include_path)
    if missing := [name for name in names if not manager.match_tasks([name])]:
        where = f" or in --include_path {include_path!r}" if include_path else ""
        raise LitHFError(f"lm-eval has no task {missing[0]!r}{where}; `lm-eval ls tasks` lists them.")
    return manager, names


def evaluate(
    model: torch.nn.Module, tokenizer: Any, manager: Any, names: list[str], config: Any, autocast: torch.dtype | None
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` of the tasks `names` on `HFLM(pretrained=model, tokenizer=tokenizer)`: lm-eval's
    results dictionary."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, mixed_precision_dtype=autocast)
    limit = int(config.limit) if config.limit is not None and config.limit >= 1 else config.limit
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=config.num_fewshot,
        limit=limit,
        bootstrap_iters=config.bootstrap_iters,
        log_samples=False,
        task_manager=manager,
    )


def harness_scalars(results: dict[str, Any]) -> dict[str, float]:
    """`lm_eval/<task>/<metric>` for every number of lm-eval's per-task results (`acc,none` -> `acc`; another
    filter than `none` stays after a colon: `exact_match:strict-match`)."""
    scalars = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metric, _, kind = key.partition(",")
                scalars[f"lm_eval/{task}/{metric}{'' if kind in ('', 'none') else ':' + kind}"] = float(value)
    return scalars


@rank_zero_only
def write_results(trainer: L.Trainer, results: dict[str, Any]) -> Path:
    """lm-eval's results as its own CLI writes them (`lm_eval.json`), the scalars (`results.json`, as every run's)
    and the scalars to the trainer's logger (TensorBoard: step 0), all in a new log folder made only now that
    there is something to put in it."""
    from lm_eval.utils import handle_non_serializable

    scalars = harness_scalars(results)
    folder = Path(trainer.log_dir or trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = unused(folder / "lm_eval.json")
    write_text(target, json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    write_text(unused(folder / "results.json"), json.dumps(scalars, indent=2, sort_keys=True) + "\n")
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=0)
        logger.finalize("success")
    print(f"lm-eval results written to {target}")
    return folder


def unused(path: Path) -> Path:
    """`path`, or `name-1.json`, `name-2.json`, ... where it exists (without a logger the folder is not new)."""
    n, free = 0, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return free
