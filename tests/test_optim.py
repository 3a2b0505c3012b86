"""AdamW construction: the fused kernel where torch has one, with the same updates as torch's per-tensor loop."""

import copy

import lightning as L
import pytest
import torch
from conftest import tiny_causal_lm
from transformers import GPT2Config, GPT2LMHeadModel

from lit_hf.optim import adamw_with_schedule, fused_supported, param_groups
from lit_hf.options import OptimOptions

SCHEDULE = dict(learning_rate=1e-2, weight_decay=0.1, adam_epsilon=1e-8, warmup_ratio=0.0, warmup_steps=0)


def optim(**changes: object) -> OptimOptions:
    return OptimOptions(**{**SCHEDULE, **changes})


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()


def test_fused_on_cpu_and_equal_to_the_for_loop_update():
    model = tiny_causal_lm("gpt2", vocab_size=500).eval()  # no dropout: both copies see the same gradients
    reference = copy.deepcopy(model)
    got = adamw_with_schedule(model, optim(lr_scheduler_type="linear"), total_steps=10)
    optimizer, scheduler = got["optimizer"], got["lr_scheduler"]["scheduler"]
    assert all(group["fused"] for group in optimizer.param_groups)
    assert got["lr_scheduler"]["interval"] == "step"

    # torch's reference implementation, one tensor at a time, same groups. One step: after it, the gradient of the
    # attention's key bias (zero in exact arithmetic) is rounding noise, which Adam's division amplifies.
    plain = torch.optim.AdamW(param_groups(reference, 0.1), lr=1e-2, eps=1e-8, fused=False, foreach=False)
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    train_step(model, optimizer, ids)
    train_step(reference, plain, ids)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 9 / 10)  # linear decay to zero over total_steps=10
    start = tiny_causal_lm("gpt2", vocab_size=500)  # seeded: the same weights again
    assert max((p - q).abs().max().item() for p, q in zip(model.parameters(), start.parameters(), strict=True)) > 1e-3
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_fused_for_bf16_weights_and_not_where_torch_has_no_kernel():
    model = tiny_causal_lm("gpt2", vocab_size=100).to(torch.bfloat16)
    got = adamw_with_schedule(model, optim(lr_scheduler_type="constant"), total_steps=10)
    assert all(group["fused"] for group in got["optimizer"].param_groups)
    assert not fused_supported(torch.empty(2, device="meta"))  # meta has no fused kernels: torch's default then
    meta = torch.nn.Linear(2, 2, device="meta")
    got = adamw_with_schedule(meta, optim(lr_scheduler_type="constant"), total_steps=10)
    assert not any(group["fused"] for group in got["optimizer"].param_groups)


class OneModelTask(L.LightningModule):
    """Trains `model` on batches of token ids with the optimizer lit_hf's tasks build."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self.model, optim(lr_scheduler_type="constant", adam_epsilon=1.0), total_steps=10)


def test_gradient_clipping_under_bf16_mixed_precision():
    # Lightning refuses clipping with an optimizer that says it unscales gradients itself, as fused ones do.
    config = GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=2, n_positions=16)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0  # the same gradients on both sides
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    clipped, unclipped = copy.deepcopy(model), copy.deepcopy(model)
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", gradient_clip_val=1e-2, max_steps=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(OneModelTask(model), torch.utils.data.DataLoader(ids, batch_size=2))
    # By hand: bf16 autocast, clip to norm 1e-2, torch's per-tensor AdamW. With eps=1, Adam's step is about
    # lr * gradient, so clipping changes it (with a small eps the first step would be about lr * sign).
    for reference, clip in ((clipped, 1e-2), (unclipped, None)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = reference(input_ids=ids, labels=ids).loss
        loss.backward()
        if clip:
            assert torch.nn.utils.clip_grad_norm_(reference.parameters(), clip) > 10 * clip
        torch.optim.AdamW(param_groups(reference, 0.1), lr=1e-2, eps=1.0, fused=False, foreach=False).step()
    for p, q in zip(model.parameters(), clipped.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert (
        max((p - r).abs().max().item() for p, r in zip(model.parameters(), unclipped.parameters(), strict=True)) > 1e-5
    )
