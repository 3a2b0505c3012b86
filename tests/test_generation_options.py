"""Generation options: GenerationConfig's names as task options, unset ones from the model's generation config."""

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationConfig,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.tasks import CausalLMTask
from lit_hf.tasks.generation import generate_kwargs, generation_options

SOURCES = ["Short.", "A rather longer sentence to translate here.", "Mid length one.", "Yes", "Another line."]
BEAM = {"num_beams": 3, "length_penalty": 0.6, "no_repeat_ngram_size": 2, "early_stopping": True, "max_new_tokens": 10}


def test_only_the_options_set_are_passed(gpt2_tokenizer):
    hparams = {"num_beams": 4, "temperature": None, "top_k": 0, "do_sample": False, "learning_rate": 1e-3}
    assert generation_options(gpt2_tokenizer, hparams) == {"num_beams": 4, "top_k": 0, "do_sample": False}
    assert generate_kwargs(gpt2_tokenizer, None, 7, None) == {"max_new_tokens": 7}  # the older callers' form
    for bad in ({"top_p": 1.5}, {"temperature": 0.0}, {"top_k": -1}, {"num_beams": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            generation_options(gpt2_tokenizer, bad)
    with pytest.raises(ConfigError, match="forced_bos_token"):
        generation_options(gpt2_tokenizer, {}, forced_bos_token="<no such token>")


def test_causal_lm_defaults_to_the_models_generation_config(causal_lm_dir, tmp_path):
    model_dir = tmp_path / "model"
    task = CausalLMTask(str(causal_lm_dir("gpt2")))
    task.model.generation_config = GenerationConfig(max_new_tokens=3, eos_token_id=None, pad_token_id=50256)
    task.model.save_pretrained(model_dir)
    task.tokenizer.save_pretrained(model_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The history of\nIn 1999 , a\n")
    common = [
        "predict",
        "--model=lit_hf.tasks.CausalLMTask",
        f"--model.model_name_or_path={model_dir}",
        "--data=lit_hf.data.LanguageModelingDataModule",
        f"--data.predict_file={prompts}",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    for extra, want in (([], 3), (["--model.max_new_tokens=5"], 5)):
        root = tmp_path / f"run-{want}"
        main([*common, f"--trainer.default_root_dir={root}", *extra])
        (path,) = root.rglob("predictions.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [len(task.tokenizer(r["completion"])["input_ids"]) for r in rows] == [want, want]


def tiny_t5(path: Path, tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = T5Tokenizer.from_pretrained(tokenizer_dir)
    config = T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=len(tokenizer))
    config.decoder_start_token_id = 0
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@torch.no_grad()
def test_translation_beam_options_reach_generate(tmp_path, data_dir):
    model_dir = tiny_t5(tmp_path / "t5", data_dir / "tokenizers" / "t5-small")
    file = tmp_path / "sources.txt"
    file.write_text("\n".join(SOURCES) + "\n")
    main(
        [
            "predict",
            "--model=lit_hf.tasks.TranslationTask",
            f"--model.model_name_or_path={model_dir}",
            *[f"--model.{name}={str(value).lower()}" for name, value in BEAM.items()],
            "--data=lit_hf.data.TranslationDataModule",
            f"--data.predict_file={file}",
            "--data.source_lang=en",
            "--data.target_lang=ro",
            "--data.eval_batch_size=2",
            f"--data.data_cache_dir={tmp_path / 'cache'}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
        ]
    )
    (path,) = (tmp_path / "runs").rglob("predictions.txt")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    want, greedy = [], []
    for source in SOURCES:  # one at a time, the same options given to plain transformers
        ids = tokenizer("translate English to Romanian: " + source, return_tensors="pt")
        want.append(tokenizer.decode(model.generate(**ids, **BEAM)[0], skip_special_tokens=True).strip())
        greedy.append(tokenizer.decode(model.generate(**ids, max_new_tokens=10)[0], skip_special_tokens=True).strip())
    assert path.read_text().splitlines() == want
    assert want != greedy  # the options changed the output, so the check means something
