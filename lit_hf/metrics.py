"""Metrics torchmetrics lacks in exact form: token NLL and accuracy, scipy's Spearman, corpus SacreBLEU and chrF,
rouge_score's ROUGE averaged over the whole set."""

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor, nn
from torchmetrics import Metric, SpearmanCorrCoef
from torchmetrics.functional.regression.spearman import _rank_data
from torchmetrics.utilities import dim_zero_cat

# Rows of logits per float64 chunk: about 16 MiB of them at a time (at least one row), whatever the vocabulary.
CHUNK_BYTES = 16 * 2**20


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
    returns total NLL / tokens (the loss), exp of it (perplexity), the accuracy and the tokens. The log-softmax runs in
    float64 over chunks of predicted rows (`chunk_bytes` of float64 each), so it is exact to float64 rounding
    whatever the logits' dtype and never copies the logits whole. States are float64 sums, so the result does not
    depend on how the set is split into batches or processes.
    """

    full_state_update = False

    def __init__(self, ignore_index: int = -100, shift: bool = True, chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.shift = shift
        self.chunk_bytes = chunk_bytes
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: tuple[str, ...] = ()) -> "NextTokenNLL":
        return super()._apply(moves_only(fn), exclude_state)  # float64 sums whatever the task's dtype

    def update(
        self, logits: Tensor | None = None, labels: Tensor | None = None, *, sums: tuple[Tensor, ...] | None = None
    ) -> None:
        """Scores `logits` against `labels`, or adds `sums`: (NLL, correct, tokens) computed elsewhere in the same
        way (`lit_hf.chunked_nll.nll_sums`, without full logits). Through `update`, so torchmetrics counts it."""
        if sums is not None:
            self._add(*sums)
            return
        # Shift the labels, not the logits: the last position then predicts nothing and is skipped like padding.
        targets = F.pad(labels[:, 1:], (0, 1), value=self.ignore_index) if self.shift else labels
        rows, cols = (targets != self.ignore_index).nonzero(as_tuple=True)  # (predicted tokens,) each
        step = max(1, self.chunk_bytes // (8 * logits.shape[-1]))
        nll = correct = torch.zeros((), dtype=torch.float64, device=logits.device)
        for start in range(0, len(rows), step):
            r, c = rows[start : start + step], cols[start : start + step]
            chunk = logits[r, c].double()  # (step, vocab): the only copy of logits, a bounded one
            target = targets[r, c]
            nll = nll + (chunk.logsumexp(-1) - chunk.gather(-1, target[:, None])[:, 0]).sum()
            correct = correct + (chunk.argmax(-1) == target).sum()
        self._add(nll, correct, len(rows))

    def _add(self, nll: Tensor, correct: Tensor, tokens: Tensor | int) -> None:
        # Out-of-place: states made under trainer.validate's inference mode cannot be updated in place later.
        self.nll = self.nll + nll
        self.correct = self.correct + correct
        self.tokens = self.tokens + tokens

    def compute(self) -> dict[str, Tensor]:
        loss = self.nll / self.tokens
        return {"loss": loss, "ppl": loss.exp(), "accuracy": self.correct / self.tokens, "tokens": self.tokens}


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


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sentences_per_line(text: str) -> str:
    """The text's sentences one per line, as run_summarization.py prepares texts for rougeLsum (which splits on
    newlines), with nltk's Punkt algorithm untrained: `nltk.sent_tokenize` needs the `punkt_tab` data, a download.
    Untrained, it knows no abbreviations, so "Mr. Smith" and "U.S. troops" split after the period; decimals ("2.5")
    and newlines inside a sentence are kept."""
    return "\n".join(_punkt().tokenize(text.strip()))


@functools.cache
def _punkt() -> Any:
    from nltk.tokenize.punkt import PunktSentenceTokenizer  # nltk takes 1-2 s to import: only summarization pays

    return PunktSentenceTokenizer()  # untrained: no download


class CorpusRouge(Metric):
    """ROUGE-1, -2, -L and -Lsum F-measures as `rouge_score` computes them (Porter stemming), averaged over every
    example of the set, on the 0-100 scale run_summarization.py reports.

    `update(hypotheses, references)` scores each pair with `rouge_score.rouge_scorer.RougeScorer` on texts with one
    sentence per line (`sentences_per_line`). States are float64 sums of the F-measures and the example count, so
    the mean is that of all examples, not of batch or process means.
    """

    full_state_update = False

    def __init__(self, use_stemmer: bool = True) -> None:
        super().__init__()
        from rouge_score import rouge_scorer  # imports nltk (1-2 s): only summarization pays

        self.scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        self.add_state("fmeasure", torch.zeros(len(ROUGE_TYPES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        sums = [0.0] * len(ROUGE_TYPES)
        for hypothesis, reference in zip(hypotheses, references, strict=True):
            scores = self.scorer.score(sentences_per_line(reference), sentences_per_line(hypothesis))  # (target, pred)
            sums = [total + scores[name].fmeasure for total, name in zip(sums, ROUGE_TYPES, strict=True)]
        self.fmeasure = self.fmeasure + torch.tensor(sums, dtype=torch.float64, device=self.fmeasure.device)
        self.count = self.count + len(hypotheses)

    def compute(self) -> dict[str, Tensor]:
        means = 100 * self.fmeasure / self.count.clamp(min=1)
        return dict(zip(ROUGE_TYPES, means, strict=True))
