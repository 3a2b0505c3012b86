"""A task's evaluation on its quantized model, and with `compare_full_precision` on the full-precision one too."""

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import Metric

from lit_hf.errors import LitHFError
from lit_hf.models import model_inputs
from lit_hf.options import QuantizationOptions
from lit_hf.predictions import log_dir
from lit_hf.quantization.conv1d import conv1d_to_linear
from lit_hf.quantization.coverage import Coverage
from lit_hf.quantization.methods import quantize_model
from lit_hf.sharding import is_sharded_run


class QuantizedEvaluation:
    """Swaps a task's `model` for its quantized form while it evaluates or predicts, and keeps the metric states of
    the full-precision pass apart from the quantized one's. A helper the task holds, not a module: the quantized
    and full-precision models are never in checkpoints.

    `validate`, `test`, `predict`: the model is quantized once, in place (a full-precision copy is kept only for
    `compare_full_precision`). `fit`: each validation scores a quantized copy of the current weights, and training
    goes on in full precision. LoRA adapters are merged into the copy first.
    """

    def __init__(self, options: QuantizationOptions) -> None:
        self.options = options
        self.report: Coverage | None = None
        self._trained: nn.Module | None = None  # fit's full-precision model while a validation runs on a copy
        self._full: nn.Module | None = None  # the full-precision model scored beside the quantized one
        self._full_states: dict[int, dict[str, Any]] = {}  # id(metric) -> the full-precision pass's states
        self.calibration: Callable[[int], Iterable[dict[str, Any]]] | None = None
        """This process's share of the first K calibration batches (`CalibrationData.calibrate_on`, linked by the
        CLI: the task never reads the data module)."""

    def start(self, task: L.LightningModule) -> None:
        """Before an evaluation or prediction loop: puts the quantized model in `task.model`."""
        if is_sharded_run(task):
            raise LitHFError("quantization needs the whole model on each process; run it without strategy=fsdp.")
        fitting = task.trainer.state.fn == TrainerFn.FITTING
        if not fitting and self.report is not None:  # quantized already, by an earlier loop of this trainer call
            return
        full = task.model
        model = _merged(copy.deepcopy(full) if fitting or self._needs_full(task) else full)
        if self.options.calibration_batches is not None:
            self._calibrate(task, model)
        report = quantize_model(model, self.options)
        report.check()
        if self.options.calibration_batches is not None:
            report.calibration = self._calibration_report()
        self._trained = full if fitting else None
        self._full = full if self._needs_full(task) else None
        task.model = model
        self._announce(task, report)

    def end(self, task: L.LightningModule) -> None:
        """After a loop: fit trains on the full-precision weights again."""
        if self._trained is not None:
            task.model, self._trained = self._trained, None

    def step(self, evaluate: Callable[[], None], task: L.LightningModule) -> None:
        """Runs `evaluate` on the quantized model, and first on the full-precision one when comparing."""
        if self._full is not None:
            with self._full_precision(task, {}):
                evaluate()
        evaluate()

    def end_epoch(self, end_evaluation: Callable[[], None], task: L.LightningModule) -> None:
        """The family's `end_evaluation` for both passes, and `<prefix>_delta/<metric>` = quantized - full."""
        if self._full is None:
            end_evaluation()
            return
        full: dict[str, Tensor] = {}
        with self._full_precision(task, full):
            end_evaluation()
        quantized = _recording(task, {}, rename=False)
        end_evaluation()
        del task.log_dict  # the class's own again
        deltas = {_renamed(key, "_delta"): quantized[key] - value for key, value in full.items() if key in quantized}
        task.log_dict(deltas, add_dataloader_idx=False)

    @torch.no_grad()
    def _calibrate(self, task: L.LightningModule, model: nn.Module) -> None:
        """The plug-in's observers see this process's calibration batches, then every process's statistics."""
        if self.calibration is None:
            raise LitHFError("quantization.calibration_batches needs a data module's batches: use lit_hf's CLI.")
        quantizer, batches = self.options.quantizer, self.options.calibration_batches
        conv1d_to_linear(model)  # the observers watch the Linear layers the quantizer will convert
        quantizer.prepare(model)
        for batch in self.calibration(batches):
            # with labels, as a training step: a seq2seq model makes its decoder inputs from them
            inputs = model_inputs(task.transfer_batch_to_device(batch, task.device, 0))
            quantizer.observe(inputs)
            model(**inputs)
        quantizer.synchronize(partial(all_reduce, device=task.device))

    def _needs_full(self, task: L.LightningModule) -> bool:
        return self.options.compare_full_precision and task.trainer.state.fn != TrainerFn.PREDICTING

    @contextlib.contextmanager
    def _full_precision(self, task: L.LightningModule, logged: dict[str, Tensor]) -> Iterator[None]:
        """The full-precision model, its own metric states, hypotheses files left alone, and logged names renamed
        `<prefix>_full/<metric>` (recorded in `logged`)."""
        quantized, task.model = task.model, self._full
        texts = task.__dict__.get("texts")
        if texts is not None:  # seq2seq's hypotheses files hold the quantized model's
            task.texts = _NoTexts()
        _recording(task, logged, rename=True)
        self._swap_states(task)
        try:
            yield
        finally:
            self._swap_states(task)
            del task.log_dict
            if texts is not None:
                task.texts = texts
            task.model = quantized

    def _swap_states(self, task: L.LightningModule) -> None:
        for metric in _task_metrics(task):
            # by id: a torchmetrics Metric hashes its states, so its hash changes with every update
            held = self._full_states.get(id(metric)) or _fresh_states(metric)
            self._full_states[id(metric)] = _states(metric)
            for name, value in held.items():
                setattr(metric, name, value)

    def _calibration_report(self) -> dict[str, Any]:
        options = self.options
        decided = options.quantizer.calibration()
        return {"batches": options.calibration_batches, "split": options.calibration_split, **decided}

    def _announce(self, task: L.LightningModule, report: Coverage) -> None:
        folder = log_dir(task.trainer)  # collective: every rank gets here
        first, self.report = self.report is None, report
        if task.trainer.is_global_zero and first:
            print(report.line())
            report.write(folder)


def all_reduce(tensor: Tensor, op: Literal["min", "max", "sum"], device: torch.device) -> Tensor:
    """`tensor` reduced over the run's processes (on `device`, where the process group's backend works), or itself
    on one process. Min, max and integer sums are exact in any order, so the result is the same on 1 and N."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    reduced = tensor.to(device, copy=True)
    dist.all_reduce(reduced, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op])
    return reduced.to(tensor.device)


class _NoTexts:
    """Stands in for seq2seq's hypotheses files during the full-precision pass."""

    def add(self, *args: Any) -> None:
        pass

    def finish(self, *args: Any) -> None:
        pass


def _merged(model: nn.Module) -> nn.Module:
    """LoRA adapters merged into the weights they adapt (the quantizer sees plain Linear layers)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def _task_metrics(task: L.LightningModule) -> list[Metric]:
    return [m for name, m in task.named_modules() if isinstance(m, Metric) and not name.startswith("model.")]


def _states(metric: Metric) -> dict[str, Any]:
    names = [*metric._defaults, "_update_count", "_computed"]
    return {name: getattr(metric, name) for name in names}


def _fresh_states(metric: Metric) -> dict[str, Any]:
    fresh = {}
    for name, default in metric._defaults.items():
        current = getattr(metric, name)
        fresh[name] = default.detach().clone().to(current.device) if isinstance(default, Tensor) else []
    return fresh | {"_update_count": 0, "_computed": None}


def _recording(task: L.LightningModule, logged: dict[str, Tensor], rename: bool) -> dict[str, Tensor]:
    """Shadows `task.log_dict` (an instance attribute; `del task.log_dict` ends it) so it records what it logs into
    `logged` by the family's names, and logs it as `<prefix>_full/<metric>` when `rename`."""
    log_dict = type(task).log_dict.__get__(task)

    def recorded(dictionary: dict[str, Any], **kwargs: Any) -> None:
        logged.update({key: torch.as_tensor(value).double() for key, value in dictionary.items()})
        if rename:
            dictionary, kwargs = {_renamed(k, "_full"): v for k, v in dictionary.items()}, {**kwargs, "prog_bar": False}
        log_dict(dictionary, **kwargs)

    task.log_dict = recorded
    return logged


def _renamed(key: str, suffix: str) -> str:
    prefix, _, metric = key.partition("/")
    return f"{prefix}{suffix}/{metric}"
