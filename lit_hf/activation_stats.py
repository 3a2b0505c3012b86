"""Activation statistics during evaluation: per module absmax, moments, outlier counts and a fixed-bin histogram."""

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers.pytorch_utils import Conv1D

from lit_hf.atomic import write_text
from lit_hf.errors import ConfigError
from lit_hf.predictions import log_dir

IGNORE_INDEX = -100  # labels that predict nothing: padding of the decoder's targets
CHUNK_VALUES = 2**15  # values per chunk: 256 KB of float64, reused memory rather than fresh pages
COLUMNS = ("module", "count", "absmax", "min", "max", "mean", "std", "kurtosis", "outliers", "outlier_fraction")


def block_names(model: nn.Module) -> list[str]:
    """The model's blocks: the children of each outermost `nn.ModuleList` whose children all share one class.

    That is GPT-2's `transformer.h.N`, BERT's `encoder.layer.N`, T5's `encoder.block.N` and `decoder.block.N`,
    ResNet's `encoder.stages.N`; lists nested in a block (T5's sublayers, mixture-of-experts) are parts of it."""
    lists = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) and len({type(child) for child in module}) == 1
    ]
    outer = [name for name in lists if not any(name.startswith(f"{other}.") for other in lists if other != name)]
    return [f"{name}.{index}" for name in outer for index in range(len(model.get_submodule(name)))]


def linear_names(model: nn.Module) -> list[str]:
    """Every linear layer: `nn.Linear` (torchao's quantized ones stay `nn.Linear`) and transformers' `Conv1D`."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear | Conv1D)]


@dataclass
class Sums:
    """One evaluation's exact states for M modules: int64 counts and float64 sums, so N processes add up to one."""

    counts: Tensor  # (M, 2) int64: values, outliers
    histogram: Tensor  # (M, bins + 2) int64: below the range, each bin, at or above its end
    moments: Tensor  # (M, 4) float64: sum of x, x^2, x^3, x^4
    low: Tensor  # (M,) float64 minimum
    high: Tensor  # (M,) float64 maximum

    @classmethod
    def zeros(cls, modules: int, bins: int, device: torch.device) -> "Sums":
        f64 = {"dtype": torch.float64, "device": device}
        return cls(
            torch.zeros(modules, 2, dtype=torch.int64, device=device),
            torch.zeros(modules, bins + 2, dtype=torch.int64, device=device),
            torch.zeros(modules, 4, **f64),
            torch.full((modules,), math.inf, **f64),
            torch.full((modules,), -math.inf, **f64),
        )

    def all_reduce(self) -> None:
        """Sums over every process (counts and histograms exactly; float64 sums in the reduction's order)."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        for tensor in (self.counts, self.histogram, self.moments):
            dist.all_reduce(tensor, dist.ReduceOp.SUM)
        dist.all_reduce(self.low, dist.ReduceOp.MIN)
        dist.all_reduce(self.high, dist.ReduceOp.MAX)


class ActivationStatistics(L.Callback):
    """Records activation statistics of chosen modules during `validate`, `test` and fit's validation.

    Per module: the number of values counted, absmax, min, max, mean, std, kurtosis (Pearson's: 3 for a normal
    distribution), the number of outliers (|x| above the threshold) and a histogram with fixed bins (plus one bin
    below the range and one at or above its end). States are int64 counts and float64 sums of x, x^2, x^3, x^4,
    all-reduced at the end of the evaluation, so N processes give one process's counts, minima, maxima and
    histograms exactly and its moments to float64 rounding.

    What is counted: a text model's per-token values at non-padding tokens only (the batch's `attention_mask`; a
    seq2seq decoder's tokens where `labels` are not -100); values without a token axis (pooled vectors) and images'
    values (every channel and pixel) whole. Generation steps (one new token each) are not counted. With several
    evaluation sets the statistics are over all of them.

    Outliers with `outlier_unit="sigma"`: |x| > threshold x the std of the same example's values in that module
    (one sequence's non-padding tokens, one image), known when its values are: one pass, and the same on any number
    of processes and batch sizes, unlike a std over the whole set (which would need a second pass).

    Logs to TensorBoard (`activations/<module>/<stat>` scalars and `activations/<module>` histograms at the global
    step) and writes `activation_stats.json` and `activation_stats.csv` in the run's folder (`-N` added rather than
    overwriting an earlier file).

    Args:
        modules: "blocks": each block's output (the children of the model's lists of layers); "linear_inputs": the
            input of every linear layer (`nn.Linear`, transformers' `Conv1D`); "outputs": the output of every
            module whose name matches `pattern`.
        pattern: Regular expression searched in module names (`transformer.h.0.mlp`, as `model.named_modules()`
            gives them): keeps only the modules that match.
        outlier_threshold: Count |x| above this many standard deviations, or above this value.
        outlier_unit: "sigma": the threshold is in standard deviations of the example's values; "absolute": a value.
        bins: Number of histogram bins.
        histogram_range: The histogram's [low, high) range, cut into `bins` equal bins.
    """

    def __init__(
        self,
        modules: Literal["blocks", "linear_inputs", "outputs"] = "blocks",
        pattern: str | None = None,
        outlier_threshold: float = 6.0,
        outlier_unit: Literal["sigma", "absolute"] = "sigma",
        bins: int = 128,
        histogram_range: tuple[float, float] = (-16.0, 16.0),
    ) -> None:
        check_options(modules, pattern, outlier_threshold, bins, histogram_range)
        self.modules, self.pattern = modules, pattern
        self.outlier_threshold, self.outlier_unit = outlier_threshold, outlier_unit
        self.bins, self.histogram_range = bins, histogram_range
        self.names: list[str] = []
        self.sums: Sums | None = None
        self._handles: list[RemovableHandle] = []
        self._masks: dict[str, Tensor] = {}
        self._edges = torch.empty(0)
        self._encoder_output: int | None = None  # data pointer of the encoder's output, whose tokens are the encoder's

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(pl_module)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._masks = token_masks(batch, model_of(pl_module)) if self._handles else {}
        self._encoder_output = None  # until this batch's encoder has run

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handles:
            self._finish(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_validation_epoch_end(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def table(self) -> list[dict[str, Any]]:
        """One row per module (the columns of `COLUMNS`) from the reduced states; None where nothing was counted."""
        assert self.sums is not None
        return [module_row(name, self.sums, index) for index, name in enumerate(self.names)]

    def _start(self, pl_module: L.LightningModule) -> None:
        """Chooses the modules, zeroes the states and hooks the modules in."""
        self._remove_hooks()
        model = model_of(pl_module)
        self.names = self._chosen(model)
        self.sums = Sums.zeros(len(self.names), self.bins, pl_module.device)
        self._edges = histogram_edges(*self.histogram_range, self.bins, pl_module.device)
        decoder = model.get_decoder() if is_encoder_decoder(model) else None
        in_decoder = {id(m) for m in decoder.modules()} if decoder is not None else set()
        for index, name in enumerate(self.names):
            module = model.get_submodule(name)
            side = "decoder" if id(module) in in_decoder else "encoder"
            self._handles.append(self._hook(module, index, side))
        if decoder is not None:
            self._handles.append(model.get_encoder().register_forward_hook(self._note_encoder_output))

    def _chosen(self, model: nn.Module) -> list[str]:
        if self.modules == "blocks":
            names = block_names(model)
        elif self.modules == "linear_inputs":
            names = linear_names(model)
        else:
            names = [name for name, _ in model.named_modules() if name]
        names = [name for name in names if self.pattern is None or re.search(self.pattern, name)]
        if not names:
            what = {"blocks": "no blocks (no nn.ModuleList of layers)", "linear_inputs": "no linear layers"}
            found = what.get(self.modules, "no modules")
            raise ConfigError(
                f"ActivationStatistics found {found} in {type(model).__name__}"
                + (f" matching pattern {self.pattern!r}" if self.pattern else "")
                + "; choose others with modules=outputs and a pattern matching module names."
            )
        return names

    def _hook(self, module: nn.Module, index: int, side: str) -> RemovableHandle:
        if self.modules == "linear_inputs":
            return module.register_forward_pre_hook(
                lambda _, args: self._record(index, side, args[0] if args else None)
            )
        return module.register_forward_hook(lambda _, args, output: self._record(index, side, first_tensor(output)))

    def _note_encoder_output(self, module: nn.Module, args: Any, output: Any) -> None:
        tensor = first_tensor(output)
        self._encoder_output = None if tensor is None else tensor.data_ptr()

    @torch.no_grad()
    def _record(self, index: int, side: str, x: Tensor | None) -> None:
        if x is None or not x.is_floating_point():
            return
        if x.data_ptr() == self._encoder_output:
            side = "encoder"  # cross-attention reads the encoder's tokens inside the decoder
        mask = example_tokens(x, self._masks, side)
        if mask is not None:
            add_values(self.sums, index, x, mask, self._edges, self.outlier_threshold, self.outlier_unit)

    def _finish(self, trainer: L.Trainer) -> None:
        assert self.sums is not None
        self.sums.all_reduce()
        rows = self.table()
        folder = log_dir(trainer)  # collective: every rank
        if trainer.is_global_zero:
            self._log(trainer, rows)
            self._write(folder, trainer, rows)

    def _log(self, trainer: L.Trainer, rows: list[dict[str, Any]]) -> None:
        step = trainer.global_step
        assert self.sums is not None
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            for index, row in enumerate(rows):
                for stat in COLUMNS[1:]:
                    if row[stat] is not None:
                        logger.experiment.add_scalar(f"activations/{row['module']}/{stat}", row[stat], step)
                if row["count"]:
                    logger.experiment.add_histogram_raw(
                        f"activations/{row['module']}", **self._raw(index), global_step=step
                    )
            logger.experiment.flush()

    def _raw(self, index: int) -> dict[str, Any]:
        """TensorBoard's raw histogram: the bins' right edges, the out-of-range bins ending at min and max."""
        assert self.sums is not None
        counts = self.sums.histogram[index].tolist()
        low, high = self.sums.low[index].item(), self.sums.high[index].item()
        edges = self._edges.tolist()
        limits = [edges[0], *edges[1:], max(high, 2 * edges[-1] - edges[-2])]  # increasing, as TensorBoard needs
        moments = self.sums.moments[index].tolist()
        return {
            "min": low,
            "max": high,
            "num": int(self.sums.counts[index, 0]),
            "sum": moments[0],
            "sum_squares": moments[1],
            "bucket_limits": limits,
            "bucket_counts": counts,
        }

    def _write(self, folder: Path, trainer: L.Trainer, rows: list[dict[str, Any]]) -> None:
        assert self.sums is not None
        stage = {TrainerFn.FITTING: "fit", TrainerFn.TESTING: "test"}.get(trainer.state.fn, "validate")
        stem = free_stem(folder, "activation_stats", (".json", ".csv"))
        document = {
            "stage": stage,
            "global_step": trainer.global_step,
            "modules": self.modules,
            "pattern": self.pattern,
            "outliers": f"|x| > {self.outlier_threshold}" + (" sigma" if self.outlier_unit == "sigma" else ""),
            "histogram_edges": self._edges.tolist(),
            "statistics": [{**row, "histogram": self.sums.histogram[index].tolist()} for index, row in enumerate(rows)],
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{stem}.json", json.dumps(document, indent=1) + "\n")
        write_text(folder / f"{stem}.csv", csv_table(rows))
        print(f"activation statistics written to {folder / stem}.json and .csv")

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._masks, self._encoder_output = [], {}, None


def check_options(
    modules: str, pattern: str | None, outlier_threshold: float, bins: int, histogram_range: tuple[float, float]
) -> None:
    """Impossible options, said before any run starts."""
    if modules == "outputs" and pattern is None:
        raise ConfigError("ActivationStatistics modules=outputs records the modules matching `pattern`: give one.")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"ActivationStatistics pattern {pattern!r} is not a regular expression: {err}.") from None
    if not outlier_threshold > 0:
        raise ConfigError(f"ActivationStatistics outlier_threshold must be positive, not {outlier_threshold}.")
    if bins < 1:
        raise ConfigError(f"ActivationStatistics bins must be at least 1, not {bins}.")
    if not histogram_range[0] < histogram_range[1]:
        raise ConfigError(
            f"ActivationStatistics histogram_range must be [low, high) with low < high: {histogram_range}."
        )


def model_of(pl_module: L.LightningModule) -> nn.Module:
    """The task's transformers model (`model`), else the module itself."""
    model = getattr(pl_module, "model", pl_module)
    return model if isinstance(model, nn.Module) else pl_module


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def first_tensor(output: Any) -> Tensor | None:
    """A module's main output: the tensor itself, or the first element of a tuple or `ModelOutput`."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        first = next(iter(output.values()))
        return first if isinstance(first, Tensor) else None
    return None


def token_masks(batch: Any, model: nn.Module) -> dict[str, Tensor]:
    """The batch's non-padding tokens, (sequences, tokens) bool: "encoder" from `attention_mask` (multiple choice's
    (batch, choices, tokens) as the model flattens it), "decoder" for encoder-decoder models from
    `decoder_attention_mask`, else from the `labels` that are not -100."""
    if not isinstance(batch, Mapping) or batch.get("attention_mask") is None:  # collators give `BatchEncoding`s
        return {}
    mask = batch["attention_mask"]
    masks = {"encoder": mask.reshape(-1, mask.shape[-1]).bool()}
    if is_encoder_decoder(model):
        decoder = batch.get("decoder_attention_mask")
        labels = batch.get("labels")
        if decoder is not None:
            masks["decoder"] = decoder.bool()
        elif isinstance(labels, Tensor) and labels.ndim == 2:
            masks["decoder"] = labels != IGNORE_INDEX
    return masks


def example_tokens(x: Tensor, masks: dict[str, Tensor], side: str) -> Tensor | None:
    """Which of `x`'s (examples, tokens) rows count: a bool mask, all-true for values without padding; None for a
    text model's per-token values matching no mask of the batch (a generation step)."""
    if x.ndim == 0:
        return None
    if x.ndim < 3 or not masks:  # images, pooled vectors, text without padding
        return torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)
    order = ("decoder", "encoder") if side == "decoder" else ("encoder", "decoder")
    for key in order:
        if key in masks and tuple(masks[key].shape) == tuple(x.shape[:2]):
            return masks[key]
    return None


def add_values(sums: Sums, index: int, x: Tensor, mask: Tensor, edges: Tensor, threshold: float, unit: str) -> None:
    """Adds the values of `x` (examples, tokens, ...) at the mask's true (example, token) rows to module `index`.

    Everything in float64 (float32 and bfloat16 values and their squares are exact there), in chunks of rows of
    about CHUNK_VALUES values: whole-tensor float64 temporaries are fresh memory each time, and the page faults that
    zero it cost more than the arithmetic. No operation mixes dtypes (that copies its operands)."""
    per_token = x.ndim >= 3 and tuple(x.shape[:2]) == tuple(mask.shape)
    rows = x.reshape(*mask.shape, -1)[mask] if per_token else x.reshape(len(x), -1)  # (rows, values)
    if rows.numel() == 0:
        return
    chunks = rows.split(max(1, CHUNK_VALUES // rows.shape[1]))
    row_sums = torch.cat([sum_and_squares(chunk.double()) for chunk in chunks])  # (rows, 2)
    if unit == "sigma":  # (rows, 1): the threshold of each row's example
        limits = threshold * example_std(row_sums, mask, rows.shape[1])[mask.nonzero()[:, 0]].unsqueeze(1)
    else:
        limits = torch.full((len(rows), 1), threshold, dtype=torch.float64, device=x.device)
    moments = torch.stack([row_sums[:, 0].sum(), row_sums[:, 1].sum(), *row_sums.new_zeros(2)])
    for chunk, limit in zip(chunks, limits.split(len(chunks[0])), strict=True):
        add_chunk(sums, index, chunk.double().view(-1), limit, chunk.shape[1], edges, moments)
    sums.moments[index] += moments
    sums.counts[index, 0] += rows.numel()


def sum_and_squares(rows: Tensor) -> Tensor:
    """(rows, 2): each row's sum of x and of x^2."""
    return torch.stack([rows.sum(1), rows.square().sum(1)], 1)


def add_chunk(sums: Sums, index: int, flat: Tensor, limit: Tensor, width: int, edges: Tensor, moments: Tensor) -> None:
    """One chunk's float64 values (rows of `width`, flattened): x^3 and x^4 sums, outliers, bins, min and max."""
    squares = flat * flat
    moments[2] += squares.dot(flat)
    moments[3] += squares.dot(squares)
    sums.counts[index, 1] += (squares.view(-1, width) > limit * limit).sum()  # |x| > limit, without abs()
    sums.histogram[index] += torch.bincount(bin_indices(flat, edges), minlength=len(edges) + 1)
    low, high = torch.aminmax(flat)
    sums.low[index] = torch.minimum(sums.low[index], low)
    sums.high[index] = torch.maximum(sums.high[index], high)


def histogram_edges(low: float, high: float, bins: int, device: torch.device | None = None) -> Tensor:
    """The float64 bin edges `low + i * width`: what `bin_indices` computes, so they agree to the last bit."""
    width = (high - low) / bins
    return low + torch.arange(bins + 1, dtype=torch.float64, device=device) * width


def bin_indices(values: Tensor, edges: Tensor) -> Tensor:
    """Each float64 value's bin among `histogram_edges`: 0 below `edges[0]`, i for `edges[i-1] <= x < edges[i]`,
    len(edges) at or above the last edge, as `torch.bucketize(values, edges, right=True)` gives it, at a fraction of
    its cost: from the bin width, except for the values the division's rounding could put one bin off (those within
    1e-9 of a bin's edge, rarely any), which go through `bucketize`."""
    bins = len(edges) - 1
    low = edges[0].item()
    position = (values - low).div_((edges[-1].item() - low) / bins)  # in bins from the low edge
    index = position.floor().clamp_(-1, bins).long().add_(1)
    near = (position - position.round()).abs_() < 1e-9
    if near.any():
        index[near] = torch.bucketize(values[near], edges, right=True)
    return index


def example_std(row_sums: Tensor, mask: Tensor, width: int) -> Tensor:
    """(examples,) the population std of each example's counted values, from its rows' sums of x and x^2."""
    per_token = torch.zeros(*mask.shape, 2, dtype=torch.float64, device=row_sums.device)
    per_token[mask] = row_sums
    totals = per_token.sum(1)  # (examples, 2)
    count = (mask.sum(1) * width).clamp(min=1).double()
    mean = totals[:, 0] / count
    return (totals[:, 1] / count - mean * mean).clamp(min=0).sqrt()


def module_row(name: str, sums: Sums, index: int) -> dict[str, Any]:
    """The statistics of module `index` from its reduced sums; None for those of a module that counted nothing."""
    count, outliers = (int(v) for v in sums.counts[index])
    if count == 0:
        return {"module": name, "count": 0, "outliers": 0} | dict.fromkeys(COLUMNS[2:8]) | {"outlier_fraction": None}
    s1, s2, s3, s4 = (v / count for v in sums.moments[index].tolist())
    var = max(s2 - s1 * s1, 0.0)
    central4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
    low, high = sums.low[index].item(), sums.high[index].item()
    return {
        "module": name,
        "count": count,
        "absmax": max(abs(low), abs(high)),
        "min": low,
        "max": high,
        "mean": s1,
        "std": math.sqrt(var),
        "kurtosis": central4 / (var * var) if var > 0 else None,
        "outliers": outliers,
        "outlier_fraction": outliers / count,
    }


def csv_table(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return out.getvalue()


def free_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """`stem`, else `stem-1`, `stem-2`, ...: the first name no file with any of `suffixes` has (none overwritten)."""
    name, n = stem, 0
    while any((folder / f"{name}{suffix}").exists() for suffix in suffixes):
        n += 1
        name = f"{stem}-{n}"
    return name
