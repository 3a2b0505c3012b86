"""Labels of a classification head: the data's label names put onto the checkpoint's config, and the metrics."""

import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef
from transformers import PretrainedConfig

from lit_hf.errors import LitHFError
from lit_hf.metrics import ExactSpearman


def make_metric(name: str, num_labels: int) -> Metric:
    """One metric, in float64 where it accumulates sums, so results do not depend on batching or processes."""
    metric = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=max(num_labels, 2), average="micro"),
        "f1": BinaryF1Score,  # of the positive class (id 1: equivalent / duplicate), as GLUE scores MRPC and QQP
        "matthews": lambda: MatthewsCorrCoef(task="multiclass", num_classes=max(num_labels, 2)),
        "pearson": PearsonCorrCoef,
        "spearman": ExactSpearman,
        "loss": MeanMetric,
    }[name]()
    return metric.set_dtype(torch.float64)


def is_default_labels(config: PretrainedConfig) -> bool:
    return all(name == f"LABEL_{i}" for i, name in config.id2label.items())


def head_size(config: PretrainedConfig) -> int | None:
    """The number of outputs of the checkpoint's classification head, or None when it has none (a base model)."""
    heads = ("ForSequenceClassification", "ForImageClassification")
    has_head = any(a.endswith(heads) for a in config.architectures or [])
    return config.num_labels if has_head else None


def configure_labels(
    config: PretrainedConfig, label_names: list[str] | None, regression: bool, ignore_mismatched_sizes: bool
) -> list[int] | None:
    """Set the config's labels and `problem_type` from the data; returns the model's id for each data label when the
    checkpoint already has the same labels in another order (whose order is kept, as run_glue does), else None."""
    if label_names is None and not regression:  # no labels from the data: the checkpoint's own
        config.problem_type = config.problem_type or "single_label_classification"  # the export's config.json says it
        return None
    wanted = 1 if regression else len(label_names)
    size = head_size(config)
    if size is not None and size != wanted and not ignore_mismatched_sizes:
        what = "a regression (1 output)" if regression else f"{wanted} labels ({', '.join(label_names)})"
        raise LitHFError(
            f"The data has {what} but the checkpoint's classification head has {size} outputs "
            f"({', '.join(config.id2label.values())}); pass --model.ignore_mismatched_sizes=true for a new head."
        )
    if regression:
        config.num_labels, config.problem_type = 1, "regression"
        return None
    own = {name.lower(): int(i) for name, i in config.label2id.items()}
    if size == wanted and not is_default_labels(config):
        if sorted(own) == sorted(name.lower() for name in label_names):
            return [own[name.lower()] for name in label_names]
        message = f"The checkpoint's labels {sorted(config.label2id)} differ from the data's; using the data's."
        warnings.warn(message, stacklevel=3)
    config.num_labels, config.problem_type = wanted, "single_label_classification"
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    return None


def in_data_order(model: nn.Module, model_ids: Tensor | None, batch: dict[str, Tensor]) -> Any:
    """`model(**batch)` for labels in the data's order when the checkpoint orders them otherwise (`model_ids`: the
    model's id of each data label, from `configure_labels`): the loss sees model ids, the returned logits
    (batch, num_labels) are in data order, as metrics and predictions read them."""
    if model_ids is not None and "labels" in batch:
        batch = {**batch, "labels": model_ids[batch["labels"]]}
    out = model(**batch)
    if model_ids is not None:
        out.logits = out.logits[:, model_ids]
    return out
