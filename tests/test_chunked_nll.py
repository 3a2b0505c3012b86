"""`--model.chunked_loss`: the output layer and the NLL computed by row chunks give transformers' loss, gradients and
perplexity, and a training step never holds (tokens x vocabulary) logits."""

import copy
from pathlib import Path

import pytest
import torch
from reference import logged, read_results, reference_blocks, reference_perplexity, wiki_00_held_out
from runs import one_thread
from test_train_loss import family_args
from test_train_loss import fit as train_loss_fit
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    MarianConfig,
    MarianMTModel,
    OPTConfig,
    OPTForCausalLM,
    T5ForConditionalGeneration,
)

from lit_hf import chunked_nll
from lit_hf.adapters import apply_peft
from lit_hf.chunked_nll import mean_nll, next_token_targets, nll_sums, use_chunked_head
from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.metrics import NextTokenNLL
from lit_hf.options import LoraOptions, SpeedOptions
from lit_hf.speed import checkpoint_activations
from lit_hf.tasks import CausalLMTask, TranslationTask

ROWS = 48  # rows per chunk in these tests: 128 rows are 3 chunks, the last one partial


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunked_nll, "CHUNK_BYTES", 0)
    monkeypatch.setattr(chunked_nll, "MIN_CHUNK_ROWS", ROWS)


def wiki_batch(data_dir: Path, tokenizer, rows: int = 2, length: int = 64) -> torch.Tensor:
    ids = tokenizer((data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8")[:20000])["input_ids"]
    return torch.tensor(ids[: rows * length]).view(rows, length)


def opt_untied(vocab_size: int) -> OPTForCausalLM:
    """OPT with its own output matrix and a `project_out` between the last block and the output layer."""
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=vocab_size, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                       word_embed_proj_dim=16, tie_word_embeddings=False, dropout=0.0)  # fmt: skip
    return OPTForCausalLM(config)


def marian_with_final_bias(vocab_size: int) -> MarianMTModel:
    """Marian (as BART, mBART, Pegasus) adds a `final_logits_bias` buffer to its output layer's logits; a random one
    here, as converted OPUS-MT models carry a trained one."""
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.0,
                          max_position_embeddings=128, pad_token_id=0, decoder_start_token_id=0)  # fmt: skip
    model = MarianMTModel(config)
    model.final_logits_bias.normal_(std=2.0)
    return model


def case(kind: str, trained_gpt2_dir: Path, tiny_t5_dir: Path, ids: torch.Tensor) -> tuple:
    """(model, inputs without labels, labels, targets aligned with the flattened rows, probe inputs)."""
    labels = ids.clone()
    labels[0, :5] = -100  # a prompt that predicts nothing
    inputs: dict[str, torch.Tensor] = {"input_ids": ids}
    if kind == "t5":  # tied embeddings: the decoder's output is scaled by d_model**-0.5 before the output layer
        model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir, dropout_rate=0.0)
        ids = ids % model.config.vocab_size  # GPT-2's token ids as T5's: a sequence of T5 tokens all the same
        labels = torch.where(labels == -100, -100, ids)
        inputs = {"input_ids": ids, "decoder_input_ids": model._shift_right(labels)}
        return model, inputs, labels, labels.reshape(-1), inputs
    if kind == "marian":  # encoder-decoder with a final bias after the output layer
        model = marian_with_final_bias(50257)
        inputs = {"input_ids": ids, "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels)}
        return model, inputs, labels, labels.reshape(-1), None  # the default probe: encoder and decoder inputs
    model = opt_untied(50257) if kind == "opt" else AutoModelForCausalLM.from_pretrained(trained_gpt2_dir)
    if kind == "packed":  # three documents in row 0, two in row 1; blocks recomputed in the backward pass too
        inputs["position_ids"] = torch.cat([torch.arange(n) for n in (20, 30, 14, 40, 24)]).view(2, 64)
        checkpoint_activations(model, SpeedOptions(gradient_checkpointing=True))
    if kind == "lora":
        model = apply_peft(model, "CAUSAL_LM", LoraOptions(dropout=0.0))
        torch.manual_seed(1)  # LoRA's B starts at zero: move it, so the adapters change the output
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(std=0.1)
    return model, inputs, labels, next_token_targets(labels), None


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("kind", ["gpt2", "opt", "t5", "marian", "lora", "packed"])
def test_loss_and_every_gradient_equal_transformers(
    kind: str, small_chunks: None, trained_gpt2_dir: Path, tiny_t5_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    """Against transformers' float32 loss and gradients, and against the float64 ones of the same model (exact but
    for float64 rounding). Float32 rounding alone puts transformers' own gradients up to 1.3e-6 (relative norm) from
    exact here, so the chunked ones may be as far: each must be within twice transformers' worst error of both."""
    ids = wiki_batch(data_dir, gpt2_tokenizer)
    model, inputs, labels, targets, probe = case(kind, trained_gpt2_dir, tiny_t5_dir, ids)
    model.train()
    plain, exact = copy.deepcopy(model), copy.deepcopy(model).double()
    # Without a cache, as lit_hf runs the model: with one, transformers ignores packed positions.
    want = plain(**inputs, labels=labels, use_cache=False).loss  # T5: decoder_input_ids given, labels not shifted
    want.backward()
    exact(**inputs, labels=labels, use_cache=False).loss.backward()
    use_chunked_head(model, probe)
    got = mean_nll(model, inputs, targets)
    got.backward()
    assert relative(got, want) < 1e-6
    grads, plain_grads, exact_grads = ({n: p.grad.double() for n, p in m.named_parameters() if p.requires_grad}
                                       for m in (model, plain, exact))  # fmt: skip
    trained = list(grads)
    largest = max(grad.norm() for grad in exact_grads.values())
    zero = {name for name in trained if exact_grads[name].norm() < 1e-9 * largest}  # key biases: softmax ignores them
    bound = 2 * max(relative(plain_grads[name], exact_grads[name]) for name in trained if name not in zero)
    assert 1e-7 < bound < 1e-5  # float32 rounding, not a wrong gradient
    for name in trained:
        if name in zero:
            assert (grads[name] - exact_grads[name]).norm() < 1e-6 * largest, name
        else:
            assert relative(grads[name], exact_grads[name]) <= bound, name
            assert relative(grads[name], plain_grads[name]) <= bound, name
    assert len(trained) - len(zero) >= 4  # LoRA: A and B of 2 blocks


def test_bf16_mixed_gradients_are_as_close_to_float32_as_transformers_bf16_ones(
    small_chunks: None, trained_gpt2_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    """Under bf16 autocast (`--trainer.precision=bf16-mixed`) both paths round differently, so neither is the
    reference: each chunked gradient must be about as close to the float32 one as transformers' bf16 gradient is."""
    ids = wiki_batch(data_dir, gpt2_tokenizer)
    model, inputs, labels, targets, _ = case("gpt2", trained_gpt2_dir, Path(), ids)
    plain, fp32 = copy.deepcopy(model), copy.deepcopy(model)
    fp32(**inputs, labels=labels, use_cache=False).loss.backward()
    use_chunked_head(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = plain(**inputs, labels=labels, use_cache=False).loss
        got = mean_nll(model, inputs, targets)
    want.backward()
    got.backward()
    assert relative(got, want) < 1e-5
    exact, bf16 = dict(fp32.named_parameters()), dict(plain.named_parameters())
    every = {name: torch.cat([p.grad.flatten() for p in m.values()]) for name, m in
             (("got", dict(model.named_parameters())), ("bf16", bf16), ("exact", exact))}  # fmt: skip
    # All gradients together, then each: 0.99x and 1.01x transformers' bf16 error on two threads, 1.21x and 1.65x on
    # one (AVX2 CPU, the trained fixture made on as many threads). A wrong gradient is off by ~100x, not 1.3x.
    assert relative(every["got"], every["exact"]) <= 1.3 * relative(every["bf16"], every["exact"])
    for name, param in model.named_parameters():
        assert relative(param.grad, exact[name].grad) <= 2 * relative(bf16[name].grad, exact[name].grad) + 1e-4, name


def test_evaluation_sums_equal_the_exact_metric_on_full_logits(
    small_chunks: None, trained_gpt2_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    model = AutoModelForCausalLM.from_pretrained(trained_gpt2_dir).eval()
    ids = wiki_batch(data_dir, gpt2_tokenizer)
    labels = ids.clone()
    labels[1, 40:] = -100
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double()  # (2, 64, vocab): the independent float64 computation
    log_probs = logits[:, :-1].log_softmax(-1)
    shifted = labels[:, 1:]
    keep = shifted != -100
    nll = -log_probs.gather(-1, shifted.clamp(min=0)[..., None])[..., 0][keep].sum()
    correct = (log_probs.argmax(-1) == shifted)[keep].sum()
    use_chunked_head(model)
    with torch.no_grad():
        got = nll_sums(model, {"input_ids": ids}, next_token_targets(labels))
    assert got[2].item() == keep.sum().item() == 63 + 39
    assert got[0].item() == pytest.approx(nll.item(), rel=1e-12)
    assert got[1].item() == correct.item() > 0


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("chunked", [True, False])
def test_training_step_holds_no_token_by_vocabulary_tensor(
    chunked: bool, trained_gpt2_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    task = CausalLMTask(str(trained_gpt2_dir), chunked_loss=chunked)
    ids = wiki_batch(data_dir, gpt2_tokenizer, rows=8, length=64)  # 512 rows: 2 chunks of the default size
    with LargestTensor() as seen:
        task.training_step({"input_ids": ids, "labels": ids}, 0).backward()
    full = ids.numel() * len(gpt2_tokenizer)
    if chunked:
        assert seen.largest <= chunked_nll.chunk_rows(len(gpt2_tokenizer)) * len(gpt2_tokenizer) < full
    else:
        assert seen.largest >= full


@pytest.mark.parametrize("chunked", [True, False])
def test_seq2seq_training_step_holds_no_target_by_vocabulary_tensor(
    chunked: bool, small_chunks: None, tiny_t5_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    task = TranslationTask(str(tiny_t5_dir), chunked_loss=chunked)
    ids = wiki_batch(data_dir, gpt2_tokenizer) % task.model.config.vocab_size  # (2, 64): 128 target rows
    with LargestTensor() as seen:
        task.training_step({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}, 0).backward()
    full = ids.numel() * task.model.config.vocab_size
    assert seen.largest <= ROWS * task.model.config.vocab_size < full if chunked else seen.largest >= full


def test_models_that_change_logits_after_the_output_layer_are_refused() -> None:
    size = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "head_dim": 8}
    config = Gemma2Config(**size, num_attention_heads=2, num_key_value_heads=1, final_logit_softcapping=30.0)
    with pytest.raises(ConfigError, match="Gemma2ForCausalLM changes the logits after its output layer"):
        use_chunked_head(Gemma2ForCausalLM(config))


def test_seq2seq_train_and_val_loss_equal_the_full_logits_ones(tmp_path: Path, small_chunks: None) -> None:
    """The translation quickstart (byte-level T5 from scratch, seeded) for one step: `train/loss` with the option is
    transformers' loss, and `val/loss` the float64 NLL of full logits (both: the same run without the option)."""
    args = [*family_args("translation", tmp_path), "--model.predict_with_generate=false", "--data.batch_size=8"]
    epoch = ["--trainer.max_steps=-1", "--trainer.max_epochs=1", "--trainer.limit_val_batches=1"]  # 1 step, 1 val
    main([*train_loss_fit(tmp_path / "plain", tmp_path / "cache", *args), *epoch])
    main([*train_loss_fit(tmp_path / "chunked", tmp_path / "cache", *args, "--model.chunked_loss=true"), *epoch])
    for tag in ("train/loss", "val/loss"):
        plain, chunked = logged(tmp_path / "plain", tag), logged(tmp_path / "chunked", tag)
        assert list(plain) == list(chunked) == [0], tag
        assert chunked[0] == pytest.approx(plain[0], rel=1e-6), tag


def validate(root: Path, model: Path, text: Path, *extra: str) -> dict[str, float]:
    main([
        "validate",
        "--model=lit_hf.tasks.CausalLMTask",
        f"--model.model_name_or_path={model}",
        "--data=lit_hf.data.LanguageModelingDataModule",
        f"--data.validation_file={text}",
        "--data.block_size=64",
        "--data.max_eval_samples=30",
        "--data.eval_batch_size=10",
        f"--data.data_cache_dir={root.parent / 'cache'}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        *extra,
    ])  # fmt: skip
    return read_results(root)


def test_validate_gives_the_full_logits_perplexity(
    tmp_path: Path, trained_gpt2_dir: Path, data_dir: Path, gpt2_tokenizer
) -> None:
    """`validate --model.chunked_loss=true` against `NextTokenNLL` on the full logits of the same batches (the
    path without the option) and against transformers one block at a time."""
    text = tmp_path / "held_out.txt"
    text.write_text(wiki_00_held_out(data_dir), encoding="utf-8")  # text the trained model did not see
    got = validate(tmp_path / "chunked", trained_gpt2_dir, text, "--model.chunked_loss=true")
    blocks = reference_blocks(text, gpt2_tokenizer, 64)[:30]
    model, full = AutoModelForCausalLM.from_pretrained(trained_gpt2_dir).eval(), NextTokenNLL()
    with torch.no_grad():
        for batch in torch.from_numpy(blocks).long().split(10):
            full.update(model(input_ids=batch).logits, batch)
    want = full.compute()
    assert got["val/scored_tokens"] == want["tokens"] == 30 * 63
    assert got["val/accuracy"] == want["accuracy"].item()
    assert got["val/ppl"] == pytest.approx(want["ppl"].item(), rel=1e-9)
    assert got["val/ppl"] == pytest.approx(reference_perplexity(trained_gpt2_dir, blocks)["ppl"], rel=1e-6)
    assert got["val/ppl"] < 5000  # the trained model (3,008), not a uniform guess over 50,257 tokens


def test_two_processes_train_loss_is_the_one_process_transformers_value(tmp_path: Path) -> None:
    """The quickstart's first step: 2 DDP processes with the option log the loss 1 process logs without it."""
    args = family_args("clm", tmp_path)
    two = ["--data.batch_size=4", "--trainer.devices=2", "--trainer.strategy=ddp_fork", "--model.chunked_loss=true"]
    with one_thread():  # forked children of a process with OpenMP's worker threads running hang (libgomp)
        main(train_loss_fit(tmp_path / "one", tmp_path / "cache", *args, "--data.batch_size=8"))
        main(train_loss_fit(tmp_path / "two", tmp_path / "cache", *args, *two))
    one, two = logged(tmp_path / "one", "train/loss"), logged(tmp_path / "two", "train/loss")
    assert list(one) == list(two) == [0]
    assert two[0] == pytest.approx(one[0], rel=1e-5)
