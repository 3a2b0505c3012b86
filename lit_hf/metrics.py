"""Token-level metrics torchmetrics lacks in exact form: summed NLL and next-token accuracy in float64 states."""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


class NextTokenNLL(Metric):
    """Sums the next-token negative log-likelihood and correct argmax predictions over all predicted tokens.

    `update(logits, labels)` takes (batch, seq_len, vocab) logits and (batch, seq_len) labels with -100 where no
    prediction counts; position t predicts label t + 1. `compute()` returns total NLL / tokens (the loss),
    exp of it (perplexity) and the accuracy. States are float64 sums, so the result does not depend on how
    the set is split into batches or processes.
    """

    full_state_update = False

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        # Shift the labels, not the logits: viewing (batch * seq_len, vocab) copies nothing.
        targets = F.pad(labels[:, 1:], (0, 1), value=self.ignore_index).flatten()  # (batch * seq_len,)
        flat = logits.flatten(0, 1)
        flat = flat if flat.dtype == torch.float32 else flat.float()
        keep = targets != self.ignore_index
        nll = F.cross_entropy(flat, targets, ignore_index=self.ignore_index, reduction="none")
        # Out-of-place: states made under trainer.validate's inference mode cannot be updated in place later.
        self.nll = self.nll + nll.double().sum()
        self.correct = self.correct + ((flat.argmax(-1) == targets) & keep).sum().double()
        self.tokens = self.tokens + keep.sum().double()

    def compute(self) -> dict[str, Tensor]:
        loss = self.nll / self.tokens
        return {"loss": loss, "ppl": loss.exp(), "accuracy": self.correct / self.tokens}
