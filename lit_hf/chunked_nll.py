"""Token NLL without vocabulary-sized logits: the output layer and the cross-entropy computed together, by row chunks.

A language model's last step turns (tokens, hidden) states into (tokens, vocab) logits, which for GPT-2's 50,257 or
BLOOM's 250,880 entries outweigh every activation of a step, and again for their gradient. `use_chunked_head`
changes the model's output layer (`get_output_embeddings()`, an `nn.Linear`) in place so that, while targets are set
on it, it computes the NLL of each chunk of rows and keeps only that chunk's logits; `mean_nll` (training) and
`nll_sums` (evaluation) set the targets and run the model's own forward, so everything the model does before its
output layer (T5's scaling of tied embeddings, OPT's `project_out`, final norms) and everything around the forward
(FSDP2 gathers the root's parameters only inside it, LoRA, gradient checkpointing, `torch.compile`, autocast) stays
as it is. BART, mBART, Marian and Pegasus add a `final_logits_bias` buffer to the output layer's logits: the head
adds it inside each chunk. Models that change the logits otherwise after the output layer (soft-capping, logit
scales) are refused by a probe when the head is installed.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_hf.errors import ConfigError

IGNORE_INDEX = -100  # labels that predict nothing (padding, prompts), as transformers' losses skip them

# Rows per chunk: as many as keep a chunk's float32 logits within CHUNK_BYTES, but at least MIN_CHUNK_ROWS, because a
# chunk reads the whole output matrix once (BLOOM's 250,880 x 1,024 is 1 GB): fewer rows would make the step
# memory-bound. GPT-2: 333 rows (67 MB of logits); BLOOM: 256 rows (257 MB, against 4 GB for 4 x 1,024 tokens).
CHUNK_BYTES = 64 * 2**20
MIN_CHUNK_ROWS = 256


def chunk_rows(vocab_size: int) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (4 * vocab_size))


def next_token_targets(labels: Tensor) -> Tensor:
    """(batch * seq_len,) targets of a decoder-only model: position t predicts label t + 1, the last one nothing,
    as transformers' `ForCausalLMLoss` shifts them."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)


class LinearNLL(torch.autograd.Function):
    """The summed float32 NLL of `targets` under `hidden @ weight.T + bias`, chunk by chunk of `rows` rows.

    When gradients are needed, each chunk's gradients are computed in the forward pass while its logits exist
    (Liger's fused linear cross-entropy): the step then does the plain path's three matrix products, not the four
    of recomputing each chunk's logits in the backward pass, and keeps the (tokens, hidden) and (vocab, hidden)
    gradients instead of the logits. The backward pass only scales them by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, rows: int) -> Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, target = hidden[start : start + rows], targets[start : start + rows]
            logits = F.linear(h, weight, bias).float()  # (rows, vocab): the only logits alive, as HF upcasts them
            keep = target != IGNORE_INDEX
            index = torch.where(keep, target, 0)[:, None]
            lse = logits.logsumexp(-1)
            total = total + torch.where(keep, lse - logits.gather(-1, index)[:, 0], 0.0).sum()
            if need_h or need_w or need_b:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place: d NLL / d logits = softmax - one-hot
                grad.scatter_add_(-1, index, torch.full_like(grad[:, :1], -1.0))
                grad.mul_(keep[:, None])  # ignored rows add nothing
                grad = grad.to(weight.dtype)  # the dtype the output layer's matmul ran in (autocast: bf16)
                if need_h:
                    grad_h[start : start + rows] = grad @ weight.to(grad.dtype)
                if need_w and grad.dtype == h.dtype == grad_w.dtype:  # fp32: in place, no (vocab, hidden) temporary
                    grad_w.addmm_(grad.T, h)
                elif need_w:
                    grad_w += (grad.T @ h.to(grad.dtype)).float()
                if need_b:
                    grad_b += grad.float().sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        # Scaled in place: no second copy of a (vocab, hidden) gradient at the step's peak. A second backward through
        # the same graph (retain_graph) then fails on torch's saved-tensor version check, not silently.
        saved = iter(ctx.saved_tensors)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = next(saved).mul_(grad_total) if need_h else None
        grad_w = next(saved).mul_(grad_total).to(ctx.dtypes[0]) if need_w else None
        grad_b = next(saved).mul_(grad_total).to(ctx.dtypes[1]) if need_b else None
        return grad_h, grad_w, grad_b, None, None


@torch.no_grad()
def exact_sums(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, rows: int) -> Tensor:
    """[summed NLL, correct argmax predictions] of `targets`, float64, chunk by chunk: each chunk's logits come
    out of the output layer in the model's dtype and are scored in float64, as `lit_hf.metrics.NextTokenNLL`
    scores full logits."""
    sums = torch.zeros(2, dtype=torch.float64, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        target = targets[start : start + rows]
        logits = F.linear(hidden[start : start + rows], weight, bias).double()  # (rows, vocab)
        keep = target != IGNORE_INDEX
        index = torch.where(keep, target, 0)[:, None]
        nll = torch.where(keep, logits.logsumexp(-1) - logits.gather(-1, index)[:, 0], 0.0).sum()
        sums += torch.stack([nll, ((logits.argmax(-1) == target) & keep).sum().double()])
    return sums


class ChunkedHead(nn.Linear):
    """A model's output layer with this class swapped in (the same parameters, state-dict keys and weight tying):
    a plain `nn.Linear` until `targets` is set; then its forward returns the NLL of those targets instead of logits
    (float32 sum, or with `exact` float64 [NLL sum, correct]), so the model passes that through as its `logits`."""

    targets: Tensor | None = None  # (rows,) token ids aligned with the flattened input rows, IGNORE_INDEX skipped
    exact: bool = False
    final_bias: Tensor | None = None  # (vocab,) the model's `final_logits_bias` (BART, Marian), added after this layer

    def forward(self, hidden: Tensor) -> Tensor:
        if self.targets is None:
            return super().forward(hidden)
        hidden = hidden.reshape(-1, hidden.shape[-1])  # (batch * seq_len, hidden)
        bias = self.bias
        if self.final_bias is not None:  # a buffer: no gradient of its own; the layer's bias still gets its own
            final = self.final_bias.to(self.weight.dtype)
            bias = final if bias is None else bias + final
        if self.exact:
            return exact_sums(hidden, self.weight, bias, self.targets, chunk_rows(self.out_features))
        return LinearNLL.apply(hidden, self.weight, bias, self.targets, chunk_rows(self.out_features))


def use_chunked_head(model: nn.Module, example: dict[str, Tensor] | None = None) -> None:
    """Makes the model's output layer a `ChunkedHead`, after checking that the model returns that layer's output
    unchanged (but for a `final_logits_bias`) as its logits, on `example` inputs (default: 8 tokens, as the encoder's
    and the decoder's inputs of an encoder-decoder model). Raises `ConfigError` where it does not."""
    head = model.get_output_embeddings()
    if isinstance(head, ChunkedHead):
        return
    name = type(getattr(model, "get_base_model", lambda: model)()).__name__
    if type(head) is not nn.Linear:
        raise ConfigError(f"chunked_loss needs an nn.Linear output layer; {name}'s is {type(head).__name__}. "
                          "Leave chunked_loss off.")  # fmt: skip
    tokens = torch.arange(1, 9)[None] % head.out_features  # not id 0 alone: often padding, its logits all zero
    if example is None:
        example = {"input_ids": tokens}
        if getattr(model.config, "is_encoder_decoder", False):
            example["decoder_input_ids"] = tokens
    if not _returns_head_output(model, head, example):
        raise ConfigError(f"chunked_loss: {name} changes the logits after its output layer (soft-capping, a scale or "
                          "a bias), which the chunked loss would leave out. Leave chunked_loss off.")  # fmt: skip
    head.__class__ = ChunkedHead


def _returns_head_output(model: nn.Module, head: nn.Module, example: dict[str, Tensor]) -> bool:
    seen: list[Tensor] = []
    hook = head.register_forward_hook(lambda module, args, output: seen.append(output))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(**example, use_cache=False).logits
    finally:
        hook.remove()
        model.train(training)
    if len(seen) != 1 or logits.shape != seen[0].shape:
        return False
    bias = final_logits_bias(model)
    return torch.equal(logits.float(), seen[0].float() + (0 if bias is None else bias.float()))


def final_logits_bias(model: nn.Module) -> Tensor | None:
    """(vocab,) the bias BART, mBART, Marian and Pegasus add to their output layer's logits, or None."""
    bias = getattr(_base(model), "final_logits_bias", None)
    return None if bias is None else bias.reshape(-1)


def _run(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor, exact: bool) -> Tensor:
    head = model.get_output_embeddings()
    if not isinstance(head, ChunkedHead):
        raise TypeError("call use_chunked_head(model) first")
    owner, bias = _base(model), final_logits_bias(model)
    head.targets, head.exact, head.final_bias = targets, exact, bias
    if bias is not None:  # the model adds it to what the head returns: a zero then, and the head adds it per chunk
        saved, owner.final_logits_bias = owner.final_logits_bias, bias.new_zeros(())
    try:
        return model(**inputs, use_cache=False).logits  # what the head returned
    finally:
        if bias is not None:
            owner.final_logits_bias = saved  # the buffer itself
        head.targets = head.final_bias = None


def mean_nll(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor) -> Tensor:
    """The mean float32 NLL over the targets that are not IGNORE_INDEX: transformers' loss for `labels` (with
    `next_token_targets(labels)` for a decoder-only model), differentiable, without full logits.
    `inputs`: the model's keyword arguments without `labels`."""
    return _run(model, inputs, targets, exact=False) / (targets != IGNORE_INDEX).sum()


def nll_sums(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 (summed NLL, correct argmax predictions, scored tokens) of the targets, for evaluation."""
    nll, correct = _run(model, inputs, targets, exact=True)
    return nll, correct, (targets != IGNORE_INDEX).sum().double()


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # under LoRA: the model inside
