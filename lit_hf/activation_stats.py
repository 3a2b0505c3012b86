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
    """One evaluation's exact states for M modules: int64 counts and float64 sums, so N processes add up to one.

    One tensor per kind for all modules (three all-reduces in all); `of_module` gives the views into one module's rows
    that its hook adds to in place. The number of values is the histogram's total: every value is in one of its bins."""

    counts: Tensor  # (M, bins + 3) int64: outliers, then the histogram: below the range, each bin, at or above its end
    moments: Tensor  # (M, 4) float64: sum of x, x^2, x^3, x^4
    extremes: Tensor  # (M, 2) float64: -minimum, maximum (one MAX reduction for both)

    @classmethod
    def zeros(cls, modules: int, bins: int, device: torch.device) -> "Sums":
        return cls(
            torch.zeros(modules, bins + 3, dtype=torch.int64, device=device),
            torch.zeros(modules, 4, dtype=torch.float64, device=device),
            torch.full((modules, 2), -math.inf, dtype=torch.float64, device=device),
        )

    def of_module(self, index: int) -> "ModuleSums":
        moments = self.moments[index]
        return ModuleSums(self.counts[index, 0], self.counts[index, 1:], moments[:2], moments[2], moments[3],
                          self.extremes[index])  # fmt: skip

    def histogram(self, index: int) -> Tensor:
        return self.counts[index, 1:]

    def all_reduce(self) -> None:
        """Sums over every process (counts and histograms exactly; float64 sums in the reduction's order)."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        dist.all_reduce(self.counts, dist.ReduceOp.SUM)
        dist.all_reduce(self.moments, dist.ReduceOp.SUM)
        dist.all_reduce(self.extremes, dist.ReduceOp.MAX)


@dataclass(frozen=True)
class ModuleSums:
    """Views into one module's rows of `Sums`: a hook adds to them in place, with no indexing per batch."""

    outliers: Tensor  # () int64
    histogram: Tensor  # (bins + 2,) int64
    sums: Tensor  # (2,) float64: sum of x, x^2
    cubes: Tensor  # () float64: sum of x^3
    fourths: Tensor  # () float64: sum of x^4
    extremes: Tensor  # (2,) float64: -minimum, maximum


@dataclass(frozen=True)
class Tokens:
    """One batch's counted tokens for one of its masks: which (example, token) rows count and whose they are, found
    once per batch for every hooked module."""

    shape: tuple[int, ...]  # (examples, tokens), the mask's
    index: Tensor | None  # (rows,) the counted rows' places among examples x tokens; None when all count
    example: Tensor  # (rows,) each counted row's example
    per_example: Tensor  # (examples, 1) float64: each example's counted rows, at least 1

    @classmethod
    def of(cls, mask: Tensor) -> "Tokens":
        examples, tokens = mask.shape
        flat = mask.reshape(-1)
        index = None if bool(flat.all()) else flat.nonzero().squeeze(1)
        places = torch.arange(len(flat), device=mask.device) if index is None else index
        return cls((examples, tokens), index, places // tokens, mask.sum(1, keepdim=True).clamp(min=1).double())


@dataclass(frozen=True)
class Bins:
    """The histogram's bins, float64 edges `low + i * width`, and how a value's bin is found from them."""

    edges: Tensor  # (bins + 1,) float64
    scale: float | None  # 1 / width where x * scale is exact and its floor is the bin (see `indices`), else None
    offset: float  # low / width - 1: floor(x * scale) - offset is the bin's index

    @classmethod
    def of(cls, low: float, high: float, bins: int, device: torch.device | None = None) -> "Bins":
        width = (high - low) / bins
        first = low / width
        power_of_two = math.frexp(width)[0] == 0.5
        exact = power_of_two and width <= 1 and first.is_integer() and abs(first) + bins + 1 < 2**24
        return cls(histogram_edges(low, high, bins, device), 1 / width if exact else None, first - 1)

    def counts(self, values: Tensor, wide: Tensor) -> Tensor:
        """(bins + 2,) int64 counts of `values` (their float64 copy `wide`): below the range, in each bin, at or
        above its end."""
        return torch.bincount(self.indices(values, wide).reshape(-1), minlength=len(self.edges) + 1)

    def indices(self, values: Tensor, wide: Tensor) -> Tensor:
        """Each value's bin, as `bin_indices` gives it. With a width of 1/2^k (the default's 1/4) and `low` a multiple
        of it, x * 2^k is exact in float32 (a power-of-two scaling up: only an overflow to inf, clamped like any value
        past the end, changes it), so floor(x * 2^k) is the bin exactly: four float32 operations on the values, not
        a dozen float64 ones; otherwise `bin_indices` on the float64 values."""
        if self.scale is None:
            return bin_indices(wide, self.edges)
        exact = values.float() if values.element_size() < 4 else values  # integers to 2^24: float32 at least
        position = (exact * self.scale).floor_().clamp_(self.offset, self.offset + len(self.edges)).sub_(self.offset)
        return position.int()  # a quarter of int64's conversion time; bincount counts in int64 anyway


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
        self._tokens: dict[str, Tokens] = {}
        self._states: list[ModuleSums] = []
        self._bins = Bins.of(*histogram_range, bins)
        self._encoder_output: int | None = None  # data pointer of the encoder's output, whose tokens are the encoder's

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(pl_module)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        masks = token_masks(batch, model_of(pl_module)) if self._handles else {}
        self._tokens = {key: Tokens.of(mask) for key, mask in masks.items()}
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
        self._states = [self.sums.of_module(index) for index in range(len(self.names))]
        self._bins = Bins.of(*self.histogram_range, self.bins, pl_module.device)
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
        found = counted_rows(x, self._tokens, side)
        if found is not None and found[0].numel():
            rows, tokens = found
            add_values(self._states[index], rows, tokens, self._bins, self.outlier_threshold, self.outlier_unit)

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
        counts = self.sums.histogram(index).tolist()
        low, high = -self.sums.extremes[index, 0].item(), self.sums.extremes[index, 1].item()
        edges = self._bins.edges.tolist()
        limits = [edges[0], *edges[1:], max(high, 2 * edges[-1] - edges[-2])]  # increasing, as TensorBoard needs
        moments = self.sums.moments[index].tolist()
        return {
            "min": low,
            "max": high,
            "num": sum(counts),
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
            "histogram_edges": self._bins.edges.tolist(),
            "statistics": [{**row, "histogram": self.sums.histogram(index).tolist()} for index, row in enumerate(rows)],
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{stem}.json", json.dumps(document, indent=1) + "\n")
        write_text(folder / f"{stem}.csv", csv_table(rows))
        print(f"activation statistics written to {folder / stem}.json and .csv")

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._tokens, self._encoder_output = [], {}, None


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


def counted_rows(x: Tensor, tokens: dict[str, Tokens], side: str) -> tuple[Tensor, Tokens | None] | None:
    """`x`'s counted values as (rows, values) and whose rows they are: a text model's non-padding tokens, with the
    batch's `Tokens`; else one row per example (images, pooled vectors, text without padding), with None. None for a
    text model's per-token values matching no mask of the batch (a generation step)."""
    if x.ndim == 0:
        return None
    if x.ndim < 3 or not tokens:
        return x.reshape(len(x), -1), None
    for key in ("decoder", "encoder") if side == "decoder" else ("encoder", "decoder"):
        found = tokens.get(key)
        if found is not None and found.shape == tuple(x.shape[:2]):
            flat = x.reshape(found.shape[0] * found.shape[1], -1)  # (examples x tokens, values)
            return (flat if found.index is None else flat.index_select(0, found.index)), found
    return None


def add_values(state: ModuleSums, rows: Tensor, tokens: Tokens | None, bins: Bins, threshold: float, unit: str) -> None:
    """Adds `rows` (rows, values), one module's counted values in one batch, to its sums.

    Sums in float64 (float32 and bfloat16 values and their squares are exact there): one float64 copy and its
    squares, their row sums (the examples' standard deviations for sigma outliers come from them) and two dot
    products for x^3 and x^4; min, max and the bins (`Bins.indices`) on the values in their
    own dtype. Whole tensors, not chunks: every operation has a fixed cost that chunks would repeat."""
    wide = rows.double()
    squares = wide * wide
    row_sums = torch.stack((wide.sum(1), squares.sum(1)), 1)  # (rows, 2)
    limits = squared_limits(row_sums, tokens, rows.shape[1], threshold) if unit == "sigma" else threshold * threshold
    if bool((squares.amax(1, keepdim=True) > limits).any()):  # rarely: only then are the values counted one by one
        state.outliers.add_((squares > limits).sum())  # |x| > limit, without abs()
    state.sums.add_(row_sums.sum(0))
    flat, flat_squares = wide.view(-1), squares.view(-1)
    state.cubes.add_(flat_squares.dot(flat))
    state.fourths.add_(flat_squares.dot(flat_squares))
    low, high = torch.aminmax(rows)
    torch.maximum(state.extremes, torch.stack((-low, high)), out=state.extremes)
    state.histogram.add_(bins.counts(rows, wide))


def squared_limits(row_sums: Tensor, tokens: Tokens | None, width: int, threshold: float) -> Tensor:
    """(rows, 1): the square of each row's outlier limit, `threshold` population standard deviations of its
    example's counted values, from the rows' sums of x and x^2 (`row_sums`, (rows, 2)) of `width` values each."""
    if tokens is None:  # a row is an example
        means = row_sums / width  # (examples, 2): the mean of x and of x^2
    else:
        sums = row_sums.new_zeros(len(tokens.per_example), 2).index_add_(0, tokens.example, row_sums)
        means = sums / (tokens.per_example * width)
    limits = (means[:, 1:] - means[:, :1].square()).clamp_(min=0).sqrt_().mul_(threshold).square_()
    return limits if tokens is None else limits.index_select(0, tokens.example)


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


def module_row(name: str, sums: Sums, index: int) -> dict[str, Any]:
    """The statistics of module `index` from its reduced sums; None for those of a module that counted nothing."""
    count, outliers = int(sums.histogram(index).sum()), int(sums.counts[index, 0])
    if count == 0:
        return {"module": name, "count": 0, "outliers": 0} | dict.fromkeys(COLUMNS[2:8]) | {"outlier_fraction": None}
    s1, s2, s3, s4 = (v / count for v in sums.moments[index].tolist())
    var = max(s2 - s1 * s1, 0.0)
    central4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
    low, high = -sums.extremes[index, 0].item(), sums.extremes[index, 1].item()
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
