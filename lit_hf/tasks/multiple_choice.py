"""Multiple choice: any AutoModelForMultipleChoice (BERT, RoBERTa, ...), scored by exact accuracy and loss."""

import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from transformers import AutoModelForMultipleChoice

from lit_hf.metrics import moves_only
from lit_hf.models import DType, model_inputs
from lit_hf.options import HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.predictions import gather_by_index, log_dir, write_lines
from lit_hf.tasks.base import Split, TransformersTask


class ChoiceScores(Metric):
    """Sums of each example's cross-entropy over its choices and of correct argmax choices, with the count.

    `update(logits, labels)` takes (batch, num_choices) logits and (batch,) label indices. States are float64 sums,
    so `compute()` (mean loss, accuracy) does not depend on how the set is split into batches or processes.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("nll", "correct", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        logits = logits.double()
        # Out-of-place: states made under trainer.validate's inference mode cannot be updated in place later.
        self.nll = self.nll + F.cross_entropy(logits, labels, reduction="sum")
        self.correct = self.correct + (logits.argmax(-1) == labels).sum().double()
        self.count = self.count + labels.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"loss": self.nll / self.count, "accuracy": self.correct / self.count}

    def _apply(self, fn: Callable[[Tensor], Tensor], *args: Any, **kwargs: Any) -> "ChoiceScores":
        return super()._apply(moves_only(fn), *args, **kwargs)  # float64 sums under bf16-true too


class MultipleChoiceTask(TransformersTask):
    """Picks one of each example's choices, from batches of `input_ids`, `attention_mask` (and `token_type_ids`),
    each (batch, num_choices, seq_len), and `labels` (the correct choice's index).

    Logs `train/loss` every step; `val/loss` (mean cross-entropy over examples) and `val/accuracy` once per epoch,
    exact on any number of processes; the same under `test/`. `predict` writes `predictions.txt` (the chosen choice's
    text, one per line) and `predictions.jsonl` (index, chosen index and text, probabilities) in input order.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForMultipleChoice.from_pretrained`.
        lora: Train LoRA adapters (and the head) instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` and gradient checkpointing.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-bert/bert-base-uncased",
        hub: HubOptions = HubOptions(),
        dtype: DType | None = None,
        from_scratch: bool = False,
        optim: OptimOptions = OptimOptions(learning_rate=2e-5),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed, quantization)
        self.tokenizer = self.load_tokenizer()
        config = self.load_config()
        config.pad_token_id = self.tokenizer.pad_token_id
        self.model = self.load_model(  # PEFT has no multiple-choice type: the head is named to train with LoRA
            AutoModelForMultipleChoice, config, None, tokenizer=self.tokenizer, modules_to_save=["classifier"]
        )
        self.scores = nn.ModuleDict({split: ChoiceScores() for split in ("val", "test")})
        self.outputs: list[tuple[int, dict[str, Any]]] = []  # (index in the split, prediction row), CPU only

    def evaluate(self, batch: dict[str, Any], split: Split, dataloader_idx: int = 0) -> None:
        logits = self(**model_inputs(batch, labels=False)).logits  # (batch, num_choices)
        self.scores[split].update(logits, batch["labels"])

    def end_evaluation(self, split: Split) -> None:
        scores = self.scores[split]
        if scores.update_count == 0:  # nothing was run (e.g. limit_val_batches=0)
            return
        values = scores.compute()  # reduced across processes by torchmetrics
        self.log_dict({f"{split}/{name}": value for name, value in values.items()}, prog_bar=True)
        scores.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(**model_inputs(batch, labels=False)).logits  # (batch, num_choices)
        probabilities = logits.float().softmax(-1).cpu()
        for index, choices, probs in zip(batch["index"].tolist(), batch["choices"], probabilities, strict=True):
            best = int(probs.argmax())
            row = {"index": index, "prediction": best, "choice": choices[best], "probabilities": probs.tolist()}
            self.outputs.append((index, row))

    def on_predict_epoch_end(self) -> None:
        rows = [row for _, row in gather_by_index(self.outputs)]  # collective: every rank calls it
        self.outputs = []
        folder = log_dir(self.trainer)
        if self.trainer.is_global_zero:
            write_lines(folder / "predictions.txt", [row["choice"].replace("\n", " ") for row in rows])
            write_lines(folder / "predictions.jsonl", [json.dumps(row, ensure_ascii=False) for row in rows])
