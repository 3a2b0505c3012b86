"""Causal-LM `predict`: prompts from files, left-padded batches equal to one prompt at a time, 2 processes, sampling."""

import json
from pathlib import Path

import pytest
import torch
from reference import run_lit_hf
from runs import cpu_run, family_args, run_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_hf.cli import main

PROMPTS = [
    "The history of the",
    "In 1999 , a",
    "Python",
    "It was the best of times , it was the worst of times , it was",
    "A",
    "The city council met on Tuesday to",
    "Scientists have found",
]


def predict_args(tmp_path: Path, model_dir: Path, prompts: Path, *extra: str) -> list[str]:
    return [
        "predict",
        *family_args("causal_lm", model_dir),
        *cpu_run(tmp_path / "runs", tmp_path / "cache"),
        f"--data.predict_file={prompts}",
        *extra,
    ]


def predict(tmp_path: Path, model_dir: Path, prompts: Path, *extra: str) -> list[dict]:
    main(predict_args(tmp_path, model_dir, prompts, *extra))
    return newest_predictions(tmp_path)


def newest_predictions(tmp_path: Path) -> list[dict]:
    lines = (run_dir(tmp_path / "runs") / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@torch.no_grad()
def greedy_one_at_a_time(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Independent of lit_hf: plain transformers, each prompt alone (no padding), the new tokens decoded."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        tokens = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
        out.append(tokenizer.decode(tokens[0, ids.shape[1] :], skip_special_tokens=True))
    return out


@pytest.fixture(scope="module")
def prompts_txt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS[:3]) + "\n\n" + "\n".join(PROMPTS[3:]) + "\n", encoding="utf-8")  # a blank line
    return path


def test_batched_greedy_equals_one_prompt_at_a_time(tmp_path, causal_lm_dir, prompts_txt):
    model_dir = causal_lm_dir("gpt2")
    rows = predict(tmp_path, model_dir, prompts_txt, "--model.generation.max_new_tokens=12", "--data.eval_batch_size=3")
    assert [row["index"] for row in rows] == list(range(len(PROMPTS)))  # the blank line is no prompt
    assert [row["prompt"] for row in rows] == PROMPTS
    want = greedy_one_at_a_time(model_dir, PROMPTS, 12)
    assert [row["completion"] for row in rows] == want
    assert len({row["completion"] for row in rows}) > 1  # the prompts matter, so the check means something


def test_jsonl_prompts_on_two_processes_complete_and_in_order(tmp_path, causal_lm_dir):
    model_dir = causal_lm_dir("gpt2")
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    extra = ("--model.generation.max_new_tokens=6", "--data.eval_batch_size=2")
    one = predict(tmp_path, model_dir, path, *extra)
    run_lit_hf(*predict_args(tmp_path, model_dir, path, *extra, "--trainer.devices=2", "--trainer.strategy=ddp"))
    two = newest_predictions(tmp_path)
    assert [row["prompt"] for row in two] == PROMPTS and two == one
    assert [row["completion"] for row in two] == greedy_one_at_a_time(model_dir, PROMPTS, 6)


def test_seeded_sampling_is_reproducible(tmp_path, causal_lm_dir, prompts_txt):
    model_dir = causal_lm_dir("gpt2")
    sample = (
        "--model.generation.do_sample=true",
        "--model.generation.top_k=0",
        "--model.generation.max_new_tokens=10",
        "--data.eval_batch_size=4",
    )
    first = predict(tmp_path, model_dir, prompts_txt, *sample, "--seed_everything=1")
    again = predict(tmp_path, model_dir, prompts_txt, *sample, "--seed_everything=1")
    other = predict(tmp_path, model_dir, prompts_txt, *sample, "--seed_everything=2")
    assert first == again
    assert [r["completion"] for r in first] != [r["completion"] for r in other]
    greedy = greedy_one_at_a_time(model_dir, PROMPTS, 10)
    assert [r["completion"] for r in first] != greedy  # it sampled


def test_predict_without_prompts_is_one_line(tmp_path, causal_lm_dir, capsys):
    model_dir = causal_lm_dir("gpt2")
    args = predict_args(tmp_path, model_dir, tmp_path / "x.txt")
    args = [a for a in args if not a.startswith("--data.predict_file")] + [f"--data.test_file={tmp_path / 'x.txt'}"]
    (tmp_path / "x.txt").write_text("some text\n")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "predict_file" in capsys.readouterr().err


@torch.no_grad()
def test_command_line_options_win_over_the_checkpoints(tmp_path, causal_lm_dir, prompts_txt, data_dir):
    """`predict --ckpt_path=CKPT --model.generation.max_new_tokens=5` generates 5 tokens although the checkpoint
    saved None."""
    model_dir = causal_lm_dir("gpt2")
    main([
        "fit", *family_args("causal_lm", model_dir), f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=32", "--data.max_train_samples=8", f"--data.data_cache_dir={tmp_path / 'cache'}",
        "--trainer.accelerator=cpu", "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'fit'}",
    ])  # fmt: skip
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")
    short = predict(tmp_path, model_dir, prompts_txt, f"--ckpt_path={ckpt}", "--model.generation.max_new_tokens=5")
    full = predict(tmp_path, model_dir, prompts_txt, f"--ckpt_path={ckpt}")  # the model's default, 20 tokens
    for cut, whole in zip(short, full, strict=True):  # greedy: the 5-token completion starts the 20-token one
        assert whole["completion"].startswith(cut["completion"]) and len(cut["completion"]) < len(whole["completion"])
