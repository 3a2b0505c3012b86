"""The causal-LM task: perplexity against a plain forward pass, training, checkpoints, optimizer and loading."""

import numpy as np
import pytest
from reference import read_results, reference_blocks, reference_perplexity
from runs import cpu_run, family_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer

from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.optim import param_groups
from lit_hf.options import HubOptions, OptimOptions
from lit_hf.tasks import CausalLMTask


def run(subcommand: str, tmp_path, *args: str) -> None:
    main(
        [
            subcommand,
            *family_args("causal_lm"),
            *cpu_run(tmp_path),
            *args,
        ]
    )


@pytest.mark.parametrize(("kind", "stage"), [("gpt2", "validate"), ("opt", "validate"), ("bloom", "test")])
def test_perplexity_equals_plain_forward(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, kind, stage):
    text = data_dir / "wikitext" / "wikitext-2" / "valid.txt"
    model_dir = causal_lm_dir(kind)
    split, prefix = ("validation", "val") if stage == "validate" else ("test", "test")
    run(
        stage,
        tmp_path,
        f"--model.model_name_or_path={model_dir}",
        f"--data.{split}_file={text}",
        "--data.block_size=64",
        "--data.max_eval_samples=31",
        "--data.eval_batch_size=4",
    )
    got = read_results(tmp_path)
    want = reference_perplexity(model_dir, reference_blocks(text, gpt2_tokenizer, 64)[:31])
    assert set(got) == {f"{prefix}/ppl", f"{prefix}/loss", f"{prefix}/accuracy", f"{prefix}/scored_tokens"}
    assert got[f"{prefix}/scored_tokens"] == 31 * 63  # each block's first token has no prediction
    for name in ("ppl", "loss", "accuracy"):
        assert got[f"{prefix}/{name}"] == pytest.approx(want[name], rel=1e-6), name


def test_fit_lowers_perplexity_and_checkpoint_round_trips(tmp_path, data_dir, causal_lm_dir):
    model_dir = causal_lm_dir("gpt2")
    data = [
        f"--model.model_name_or_path={model_dir}",
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=64",
        "--data.batch_size=8",
        "--data.validation_split_percentage=20",
    ]
    run("validate", tmp_path / "before", *data)
    before = read_results(tmp_path / "before")["val/ppl"]
    run(
        "fit",
        tmp_path / "fit",
        *data,
        "--model.optim.learning_rate=3e-3",
        "--trainer.max_epochs=2",
        "--trainer.num_sanity_val_steps=0",
    )
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")
    run("validate", tmp_path / "after", *data, f"--ckpt_path={ckpt}")
    after = read_results(tmp_path / "after")["val/ppl"]
    assert after < before / 5, (before, after)
    assert after == pytest.approx(last_scalar(tmp_path / "fit", "val/ppl"), rel=1e-6)  # the weights came back
    (exported,) = (tmp_path / "fit").rglob("huggingface")  # and load into plain transformers
    blocks = np.stack(read_validation_blocks(tmp_path / "after"))
    assert reference_perplexity(exported, blocks)["ppl"] == pytest.approx(after, rel=1e-6)
    fit_results = read_results(tmp_path / "fit")  # fit's last validation, and where its checkpoint went
    assert fit_results["val/ppl"] == pytest.approx(after, rel=1e-6) and fit_results["best_model_path"] == str(ckpt)
    assert AutoTokenizer.from_pretrained(exported)("Hello")["input_ids"] == [15496]


def read_validation_blocks(root) -> list:
    """The validation blocks lit_hf cached for that run (the split carved from train), as arrays."""
    from datasets import load_from_disk

    (key,) = [p.parent for p in (root / "cache").rglob("lit_hf_key.json") if '"validation"' in p.read_text()]
    return load_from_disk(str(key))["validation"].with_format("numpy")["input_ids"]


def last_scalar(root, tag: str) -> float:
    (run_dir,) = {p.parent for p in root.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars(tag)[-1].value


def test_from_scratch_with_overrides_and_embedding_resize(causal_lm_dir, tmp_path):
    model_dir = causal_lm_dir("gpt2")
    task = CausalLMTask(str(model_dir), from_scratch=True, config_overrides="n_layer=1,n_embd=16")
    assert task.model.config.n_layer == 1 and task.model.config.n_embd == 16
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_tokens(["<new-1>", "<new-2>"])
    tokenizer.save_pretrained(tmp_path / "bigger")
    grown = CausalLMTask(str(model_dir), hub=HubOptions(tokenizer_name=str(tmp_path / "bigger")))
    assert grown.model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    same = CausalLMTask(str(model_dir))
    assert same.model.get_input_embeddings().weight.shape[0] == len(tokenizer) - 2


def test_no_weight_decay_on_biases_and_norms(causal_lm_dir):
    model = CausalLMTask(str(causal_lm_dir("gpt2"))).model
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" in names[id(p)] or ".ln_" in names[id(p)] for p in no_decay["params"])
    assert not any("bias" in names[id(p)] or ".ln_" in names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_constructor_rejects_contradictions(causal_lm_dir):
    with pytest.raises(ConfigError, match="optim.warmup_ratio or optim.warmup_steps"):
        OptimOptions(warmup_ratio=0.1, warmup_steps=10)
    with pytest.raises(ConfigError, match="from_scratch"):
        CausalLMTask(str(causal_lm_dir("gpt2")), config_overrides="n_layer=1")


def test_fit_ending_on_max_steps_validates_its_final_weights_once(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    """As `run_clm.py --do_eval`: validation every 2 steps and `max_steps=3` still score the weights of step 3, once;
    the score is a plain transformers forward's of the export (the final weights)."""
    text = data_dir / "wikitext" / "wiki_00"
    run(
        "fit", tmp_path, f"--model.model_name_or_path={causal_lm_dir('gpt2')}", f"--data.train_file={text}",
        f"--data.validation_file={text}", "--data.block_size=32", "--data.batch_size=2", "--data.max_train_samples=8",
        "--data.max_eval_samples=4", "--trainer.max_steps=3", "--trainer.val_check_interval=2",
        "--trainer.num_sanity_val_steps=0", "--model.optim.learning_rate=1e-2",
    )  # fmt: skip
    results = read_results(tmp_path)
    (exported,) = tmp_path.rglob("huggingface")
    want = reference_perplexity(exported, reference_blocks(text, gpt2_tokenizer, 32)[:4])
    assert results["global_step"] == 3 and results["val/ppl"] == pytest.approx(want["ppl"], rel=1e-6)
    (run_dir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("val/ppl")) == 2  # after step 2 as asked, after step 3 at the end
