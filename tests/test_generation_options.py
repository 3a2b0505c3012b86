"""Generation options: GenerationConfig's names as task options, unset ones from the model's generation config."""

import json
from pathlib import Path

import pytest
import torch
from runs import family_args, save_tiny_t5
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationConfig,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.options import GenerationOptions
from lit_hf.tasks import CausalLMTask
from lit_hf.tasks.generation import (
    droppable_limit,
    generate_dropping_finished,
    generate_kwargs,
    generate_texts,
)

SOURCES = ["Short.", "A rather longer sentence to translate here.", "Mid length one.", "Yes", "Another line."]
BEAM = {"num_beams": 3, "length_penalty": 0.6, "no_repeat_ngram_size": 2, "early_stopping": True, "max_new_tokens": 10}


def test_only_the_options_set_are_passed(gpt2_tokenizer):
    options = GenerationOptions(num_beams=4, temperature=None, top_k=0, do_sample=False)
    assert generate_kwargs(options, gpt2_tokenizer) == {"num_beams": 4, "top_k": 0, "do_sample": False}
    assert generate_kwargs(GenerationOptions(), gpt2_tokenizer, "hello") == {"forced_bos_token_id": 31373}  # vocab.json
    for bad in ({"top_p": 1.5}, {"temperature": 0.0}, {"top_k": -1}, {"num_beams": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError, match=f"generation.{next(iter(bad))}"):
            GenerationOptions(**bad)
    with pytest.raises(ConfigError, match="forced_bos_token"):
        generate_kwargs(GenerationOptions(), gpt2_tokenizer, forced_bos_token="<no such token>")


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
        *family_args("causal_lm", model_dir),
        f"--data.predict_file={prompts}",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    for extra, want in (([], 3), (["--model.generation.max_new_tokens=5"], 5)):
        root = tmp_path / f"run-{want}"
        main([*common, f"--trainer.default_root_dir={root}", *extra])
        (path,) = root.rglob("predictions.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [len(task.tokenizer(r["completion"])["input_ids"]) for r in rows] == [want, want]


@torch.no_grad()
def test_translation_beam_options_reach_generate(tmp_path, tiny_t5_dir):
    model_dir = tiny_t5_dir
    file = tmp_path / "sources.txt"
    file.write_text("\n".join(SOURCES) + "\n")
    main(
        [
            "predict",
            "--model=lit_hf.tasks.TranslationTask",
            f"--model.model_name_or_path={model_dir}",
            *[f"--model.generation.{name}={str(value).lower()}" for name, value in BEAM.items()],
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


# --- greedy search that drops the rows that have ended ---------------------------------------------------------


def ending_t5(path: Path, tokenizer: T5Tokenizer, sources: list[str]) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny random T5 whose greedy outputs end at different steps, or not at all within 12 tokens.

    A random T5 repeats one token, so its generation config bans repeats (`no_repeat_ngram_size=1`) and names as
    the end token one that a plain `generate` emits in some rows only, at different steps.
    """
    model_dir = save_tiny_t5(path, tokenizer)  # its own copy: the generation config is changed and saved
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = T5Tokenizer.from_pretrained(model_dir)
    batch = dict(tokenizer(sources, return_tensors="pt", padding=True))
    generated = model.generate(**batch, max_new_tokens=12, no_repeat_ngram_size=1)[:, 1:]
    candidates = torch.unique(generated)
    rows = torch.stack([(generated == token).any(-1) for token in candidates])  # (candidates, rows)
    firsts = [len(set((generated == token).int().argmax(-1)[rows[i]].tolist())) for i, token in enumerate(candidates)]
    varied = [i for i in range(len(candidates)) if 0.3 <= rows[i].float().mean() <= 0.7]
    eos = int(candidates[max(varied, key=lambda i: firsts[i])])
    model.generation_config.update(eos_token_id=eos, no_repeat_ngram_size=1)
    model.save_pretrained(model_dir)
    return model_dir, batch


@torch.no_grad()
@pytest.mark.parametrize("options", [{}, {"repetition_penalty": 1.5}, {"forced_eos_token_id": 1}])
def test_dropping_finished_rows_gives_the_tokens_of_one_generate_call(tmp_path, data_dir, t5_tokenizer, options):
    """Every row's tokens and length equal one plain `generate` call's on the whole batch, processors included
    (the forced end token at the limit counts from the absolute length, so resumed calls must keep it)."""
    sources = [json.loads(line)["translation"]["en"] for line in (data_dir / "wmt16" / "sample.json").open()]
    sources += [source.split(",")[0] for source in sources[:6]]
    model_dir, batch = ending_t5(tmp_path / "t5", t5_tokenizer, sources)
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    kwargs = {"max_new_tokens": 12, **options}
    want = model.generate(**batch, **kwargs)  # (16, longest)
    eos = model.generation_config.eos_token_id
    ends = {int(row.tolist().index(eos)) for row in want[:, 1:] if eos in row[1:]}
    assert len(ends) >= 2 and want.shape[1] == 13 and not (want[:, 1:] == eos).any(-1).all()  # so rows drop out
    limit = droppable_limit(model, kwargs)
    assert limit == 13
    assert torch.equal(generate_dropping_finished(model, batch, kwargs, limit, None), want)
    texts, lengths = generate_texts(model, T5Tokenizer.from_pretrained(model_dir), batch, kwargs, drop_finished=True)
    assert torch.equal(lengths, (want != 0).sum(-1).float())


def test_only_greedy_search_drops_rows(tiny_t5_dir):
    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir)
    assert droppable_limit(model, {"max_new_tokens": 5}) == 6
    assert droppable_limit(model, {}) == model.generation_config.max_length  # 20: transformers' default
    others = (
        {"num_beams": 2},
        {"do_sample": True},
        {"synced_gpus": True},
        {"min_new_tokens": 2},
        {"stop_strings": "."},
    )
    for other in others:
        assert droppable_limit(model, {"max_new_tokens": 5, **other}) is None


@torch.no_grad()
def test_summarization_validate_drops_finished_rows_with_the_outputs_of_plain_generate(
    tmp_path, data_dir, t5_tokenizer, monkeypatch
):
    """`validate` (drop_finished by default) on a model whose outputs end at different steps writes what plain
    `generate` gives one document at a time; translation shares the code (`generate_texts`)."""
    file = data_dir / "xsum" / "sample.json"
    sources = ["summarize: " + json.loads(line)["document"] for line in file.open()]
    model_dir, _ = ending_t5(tmp_path / "t5", t5_tokenizer, sources)
    calls = []
    plain = T5ForConditionalGeneration.generate
    monkeypatch.setattr(T5ForConditionalGeneration, "generate", lambda *a, **k: calls.append(1) or plain(*a, **k))
    main(
        [
            "validate",
            "--model=lit_hf.tasks.SummarizationTask",
            f"--model.model_name_or_path={model_dir}",
            "--data=lit_hf.data.SummarizationDataModule",
            f"--data.validation_file={file}",
            "--data.max_source_length=64",
            "--data.max_target_length=12",
            "--data.eval_batch_size=5",
            f"--data.data_cache_dir={tmp_path / 'cache'}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
        ]
    )
    assert len(calls) > 2  # 2 batches: rows were dropped and the rest resumed
    monkeypatch.undo()
    (path,) = (tmp_path / "runs").rglob("val_predictions.txt")
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = T5Tokenizer.from_pretrained(model_dir)
    want, ended = [], 0
    for source in sources:
        ids = tokenizer(source, max_length=64, truncation=True, return_tensors="pt")
        tokens = model.generate(**ids, max_new_tokens=12)[0]
        ended += int(model.generation_config.eos_token_id in tokens[1:].tolist())
        want.append(tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip())
    assert path.read_text(encoding="utf-8").splitlines() == want
    assert 0 < ended < len(sources)  # some rows end early, some run to the limit
