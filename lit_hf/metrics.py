"""Metrics torchmetrics lacks in exact form: token NLL and accuracy, scipy's Spearman, corpus SacreBLEU and chrF."""

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor, nn
from torchmetrics import Metric, SpearmanCorrCoef
from torchmetrics.functional.regression.spearman import _rank_data
from torchmetrics.utilities import dim_zero_cat


def moves_only(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """`fn` as `nn.Module._apply` receives it, less any dtype cast: metric states keep their float64/int64 sums.

    `--trainer.precision=bf16-true` casts the whole task with `.to(torch.bfloat16)`, which torchmetrics applies to
    its states too (it guards `.half()` and `.float()` but not `.to(dtype)`); a bf16 sum stops counting by 8 past
    2,048, so a mean loss over 4,000 rows came out 1.000 instead of 0.692. Device moves still apply.
    """
    probe = fn(torch.zeros((), dtype=torch.float64))
    if probe.dtype == torch.float64:
        return fn
    return lambda tensor: tensor.to(device=probe.device)


class MetricStates(nn.ModuleDict):
    """Metrics by name, moved with the task to its device but never cast to its dtype (see `moves_only`)."""

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "MetricStates":
        # torchmetrics resets a metric's update dtype to float32 on any move; keep what `set_dtype` chose
        dtypes = {metric: metric.dtype for metric in self.modules() if isinstance(metric, Metric)}
        super()._apply(moves_only(fn), recurse)
        for metric, dtype in dtypes.items():
            metric._dtype = dtype
        return self


class NextTokenNLL(Metric):
    """Sums the next-token negative log-likelihood and correct argmax predictions over all predicted tokens.

    `update(logits, labels)` takes (batch, seq_len, vocab) logits and (batch, seq_len) labels with -100 where no
    prediction counts; position t predicts label t + 1 (`shift=True`, decoder-only models) or label t
    (`shift=False`, encoder-decoder models, whose decoder inputs are the labels shifted right). `compute()`
    returns total NLL / tokens (the loss), exp of it (perplexity) and the accuracy. States are float64 sums, so
    the result does not depend on how the set is split into batches or processes.
    """

    full_state_update = False

    def __init__(self, ignore_index: int = -100, shift: bool = True) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.shift = shift
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: tuple[str, ...] = ()) -> "NextTokenNLL":
        return super()._apply(moves_only(fn), exclude_state)  # float64 sums whatever the task's dtype

    def update(self, logits: Tensor, labels: Tensor) -> None:
        # Shift the labels, not the logits: viewing (batch * seq_len, vocab) copies nothing.
        targets = F.pad(labels[:, 1:], (0, 1), value=self.ignore_index) if self.shift else labels
        targets = targets.flatten()  # (batch * seq_len,)
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


class ExactSpearman(SpearmanCorrCoef):
    """Spearman's rho as scipy computes it: the Pearson correlation of average ranks, in float64, with no epsilon.

    (torchmetrics' own adds 1e-6 to the denominator and ranks in the input dtype.) Takes 1-D float predictions
    and targets; all of them are kept and gathered from every process before ranking.
    """

    def compute(self) -> Tensor:
        preds, target = (_rank_data(dim_zero_cat(x)).double() for x in (self.preds, self.target))  # exact halves
        dp, dt = preds - preds.mean(), target - target.mean()
        return (dp * dt).sum() / ((dp * dp).sum().sqrt() * (dt * dt).sum().sqrt())


BleuTokenize = Literal["13a", "intl", "char", "none", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200"]


class CorpusSacreBLEU(Metric):
    """Corpus BLEU or chrF exactly as `sacrebleu.corpus_bleu` / `corpus_chrf` compute it, on 1 or N processes.

    `update(hypotheses, references)` takes one reference string per hypothesis. The state is sacrebleu's own
    sufficient statistics (n-gram match and total counts, lengths) summed as int64, which is how sacrebleu
    aggregates a corpus, so the score does not depend on batching, order or the number of processes.
    `compute()` returns the score on sacrebleu's 0-100 scale.
    """

    full_state_update = False

    def __init__(self, kind: Literal["bleu", "chrf"] = "bleu", tokenize: BleuTokenize = "13a") -> None:
        super().__init__()
        self.scorer = BLEU(tokenize=tokenize) if kind == "bleu" else CHRF()
        size = len(self.scorer._extract_corpus_statistics(["a"], [["a"]])[0])  # 10 for BLEU-4, 18 for chrF
        self.add_state("stats", torch.zeros(size, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        if hypotheses:
            stats = self.scorer._extract_corpus_statistics(hypotheses, [references])  # one row per sentence
            self.stats = self.stats + torch.tensor(stats, dtype=torch.int64).sum(0).to(self.stats.device)

    def compute(self) -> Tensor:
        if not self.stats.any():  # nothing scored: sacrebleu would divide by a zero length
            return torch.zeros((), dtype=torch.float64)
        return torch.tensor(self.scorer._compute_score_from_stats(self.stats.tolist()).score, dtype=torch.float64)
