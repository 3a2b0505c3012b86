"""DDP training equals one process: 2 processes with batch 4, and 1 process accumulating 2 batches of 4, train as
1 process with batch 8 does (same batches, same logged loss, validation, learning rates and final weights)."""

from pathlib import Path

import pytest
import runs
import torch
from reference import logged, run_lit_hf
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from lit_hf.cli import main

NO_DROPOUT_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 2, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
NO_DROPOUT_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
LR, WARMUP, STEPS = 1e-3, 2, 10  # 40 examples, 8 per optimizer step, 2 epochs


@pytest.fixture(scope="module")
def models(tmp_path_factory, gpt2_tokenizer, bert_tokenizer) -> dict[str, Path]:
    """Tiny models without dropout: processes draw different masks, so only then can N processes equal one."""
    torch.manual_seed(0)
    made = {}
    for family, model, tokenizer in [
        ("clm", GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2_tokenizer), **NO_DROPOUT_GPT2)), gpt2_tokenizer),
        ("cls", BertModel(BertConfig(vocab_size=len(bert_tokenizer), hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, **NO_DROPOUT_BERT)), bert_tokenizer),
    ]:  # fmt: skip
        made[family] = tmp_path_factory.mktemp(family)
        model.save_pretrained(made[family])
        tokenizer.save_pretrained(made[family])
    return made


def family_args(family: str, model_dir: Path, data_dir: Path) -> list[str]:
    if family == "clm":
        data = [f"--data.train_file={data_dir / 'wikitext/wiki_00'}", "--data.block_size=32"]
        return [*runs.family_args("causal_lm"), *data]
    data = ["--data.task_name=rte", f"--data.data_dir={data_dir / 'glue'}", "--data.group_by_length=true"]
    return [*runs.family_args("text_classification"), *data]


def fit(root: Path, family: str, model_dir: Path, data_dir: Path, *args: str) -> list[str]:
    return [
        "fit",
        *family_args(family, model_dir, data_dir),
        f"--model.model_name_or_path={model_dir}",
        f"--model.optim.learning_rate={LR}",
        f"--model.optim.warmup_steps={WARMUP}",
        "--model.optim.lr_scheduler_type=linear",  # decays over the optimizer steps Lightning estimates
        f"--data.data_cache_dir={root.parent / 'cache'}",
        "--data.max_train_samples=40",
        "--data.max_eval_samples=16",
        "--seed_everything=0",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        *args,
    ]


def weights(root: Path) -> dict[str, torch.Tensor]:
    (export,) = root.rglob("huggingface/model.safetensors")
    return load_file(export)


@pytest.mark.parametrize("family", ["clm", "cls"])
def test_two_processes_and_accumulation_equal_one_process_with_the_whole_batch(tmp_path, data_dir, models, family):
    model_dir = models[family]
    main(fit(tmp_path / "one", family, model_dir, data_dir, "--data.batch_size=8"))  # no devices, no strategy
    main(
        fit(tmp_path / "acc", family, model_dir, data_dir, "--data.batch_size=4", "--trainer.accumulate_grad_batches=2")
    )
    ddp = ["--data.batch_size=4", "--trainer.devices=2", "--trainer.strategy=ddp"]
    run_lit_hf(*fit(tmp_path / "ddp", family, model_dir, data_dir, *ddp))

    one_lr = logged(tmp_path / "one", "train/lr")
    linear = {s: LR * (s / WARMUP if s < WARMUP else (STEPS - s) / (STEPS - WARMUP)) for s in range(1, STEPS + 1)}
    # transformers' linear schedule, counted in optimizer steps; train/lr at step s is the rate after its update
    assert one_lr == pytest.approx({s - 1: lr for s, lr in linear.items()}, rel=1e-6)
    val = [tag for tag in ("val/loss", "val/ppl", "val/accuracy") if family == "clm" or tag != "val/ppl"]
    for other in ("acc", "ddp"):
        assert logged(tmp_path / other, "train/lr") == pytest.approx(one_lr, rel=1e-6), other
        for tag in val:
            assert logged(tmp_path / other, tag) == pytest.approx(logged(tmp_path / "one", tag), rel=1e-5), tag
        want, got = weights(tmp_path / "one"), weights(tmp_path / other)
        assert max(float((got[name] - want[name]).abs().max()) for name in want) <= 1e-4, other
    # per step, the mean over both processes' batches of 4 is the loss of the batch of 8
    assert logged(tmp_path / "ddp", "train/loss") == pytest.approx(logged(tmp_path / "one", "train/loss"), rel=1e-5)
