"""Translation: data module, task, exact SacreBLEU, ordered predictions, 1 vs 3 processes, the error cases."""

import json
from pathlib import Path

import pytest
import sacrebleu
import torch
from reference import REPO, read_results, run_lit_hf
from runs import cpu_run, family_args, run_dir, save_tiny_t5
from transformers import T5ForConditionalGeneration, T5Tokenizer

from lit_hf.cli import main
from lit_hf.data.seq2seq import TranslationDataModule
from lit_hf.data.seq2seq_inputs import collate_pairs, t5_prefix, tokenize_pairs
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.metrics import CorpusSacreBLEU
from lit_hf.options import GenerationOptions, HubOptions
from lit_hf.tasks.seq2seq import TranslationTask


@pytest.fixture(scope="module")
def sample_file(data_dir: Path) -> Path:
    return data_dir / "wmt16" / "sample.json"  # 10 short en-ro pairs: not a multiple of 3


def pairs_of(path: Path) -> list[dict[str, str]]:
    return [json.loads(line)["translation"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def validate_args(model: Path, file: Path, root: Path, *extra: str) -> list[str]:
    return [
        "validate",
        *family_args("translation", model),
        *cpu_run(root),
        f"--data.validation_file={file}",
        "--data.source_lang=en",
        "--data.target_lang=ro",
        "--data.max_target_length=12",
        "--data.eval_batch_size=4",
        *extra,
    ]


@pytest.fixture(scope="module")
def validated(tiny_t5_dir: Path, sample_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The log directory of one plain `validate` on the sample pairs, which several tests read."""
    root = tmp_path_factory.mktemp("validated")
    main(validate_args(tiny_t5_dir, sample_file, root))
    return run_dir(root)


# --- pure functions -------------------------------------------------------------------------------------------


def test_tokenize_pairs_prefix_labels_and_raw_references(t5_tokenizer: T5Tokenizer) -> None:
    batch = {"translation": [{"en": "Hello world", "ro": "Salut lume"}, {"en": "Yes", "ro": "Da"}]}
    options = dict(tokenizer=t5_tokenizer, source=("translation", "en"), target=("translation", "ro"))
    out = tokenize_pairs(
        batch, **options, prefix="translate English to Romanian: ", max_source_length=64, max_target_length=8,
        pad_to_max_length=False, ignore_pad_token_for_loss=True,
    )  # fmt: skip
    assert out["input_ids"][1] == t5_tokenizer("translate English to Romanian: Yes")["input_ids"]
    assert out["labels"][0] == t5_tokenizer("Salut lume")["input_ids"]
    assert out["target_text"] == ["Salut lume", "Da"]
    padded = tokenize_pairs(
        batch, **options, prefix="", max_source_length=64, max_target_length=8, pad_to_max_length=True,
        ignore_pad_token_for_loss=True,
    )  # fmt: skip
    assert all(len(ids) == 8 for ids in padded["labels"])
    assert padded["labels"][1][-1] == -100 and t5_tokenizer.pad_token_id not in padded["labels"][1]


def test_collate_pads_labels_with_minus_100_and_loss_ignores_them(tiny_t5_dir: Path, t5_tokenizer: T5Tokenizer) -> None:
    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir).eval()
    examples = []
    for i, (src, tgt) in enumerate(
        [("A short one.", "Scurt."), ("A much longer source sentence.", "O propoziție lungă.")]
    ):
        ex = t5_tokenizer(src, text_target=tgt)
        examples.append({**ex, "index": i, "target_text": tgt})
    batch = collate_pairs(examples, pad_token_id=t5_tokenizer.pad_token_id, label_pad_token_id=-100)
    assert batch["labels"][0, -1] == -100 and batch["references"] == ["Scurt.", "O propoziție lungă."]
    with torch.no_grad():
        batched = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        sums = []
        for ex in examples:
            one = {k: torch.tensor([ex[k]]) for k in ("input_ids", "attention_mask", "labels")}
            sums.append(model(**one).loss * len(ex["labels"]))
    expected = sum(sums) / sum(len(ex["labels"]) for ex in examples)  # token-weighted, padding not counted
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)


CASES = [
    (["the cat sat on the mat", "hello there"], ["the cat sat on a mat", "hello there general"]),
    (["Ion merge la școală.", "Este o zi frumoasă!", "x"], ["Ion merge la școală.", "E o zi frumoasă.", "y z"]),
    (["a b c d e f", "g h", "i j k l"], ["a b c d e g", "g h i", "i j k l m"]),
]


@pytest.mark.parametrize("hyps,refs", CASES)
def test_corpus_sacrebleu_equals_sacrebleu_however_split(hyps: list[str], refs: list[str]) -> None:
    bleu, chrf = sacrebleu.corpus_bleu(hyps, [refs]).score, sacrebleu.corpus_chrf(hyps, [refs]).score
    assert bleu > 0
    for size in (1, 2, len(hyps)):
        shards = [CorpusSacreBLEU("bleu"), CorpusSacreBLEU("bleu"), CorpusSacreBLEU("chrf")]
        for start in range(0, len(hyps), size):  # batches spread over two "processes", as a sum reduction sees them
            shards[(start // size) % 2].update(hyps[start : start + size], refs[start : start + size])
            shards[2].update(hyps[start : start + size], refs[start : start + size])
        shards[0].stats += shards[1].stats
        assert shards[0].compute().item() == bleu
        assert shards[2].compute().item() == chrf
    intl = CorpusSacreBLEU("bleu", tokenize="intl")
    intl.update(hyps, refs)
    assert intl.compute().item() == sacrebleu.corpus_bleu(hyps, [refs], tokenize="intl").score


def test_t5_prefix_rule() -> None:
    assert t5_prefix("en", "ro") == "translate English to Romanian: "
    assert t5_prefix("en_XX", "de_DE") == "translate English to German: "
    with pytest.raises(LitHFError, match="source_prefix"):
        t5_prefix("en", "xx")


def test_prefix_derived_for_t5_only_and_explicit_value_wins(tiny_t5_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    def prefix(config: str | None, source_prefix: str | None) -> str:
        hub = HubOptions(tokenizer_name=str(tiny_t5_dir), config_name=config)
        data = TranslationDataModule("en", "ro", hub=hub, source_prefix=source_prefix, validation_file="x.json")
        return data.prefix

    assert prefix(str(tiny_t5_dir), None) == "translate English to Romanian: "
    assert prefix(str(tiny_t5_dir), "") == ""
    assert prefix(str(tiny_t5_dir), "en2ro: ") == "en2ro: "
    assert prefix(None, None) == ""  # no config, no T5: no prefix


def test_saved_dataset_hub_and_cache_reuse(tiny_t5_dir: Path, sample_file: Path, tmp_path: Path, monkeypatch) -> None:
    import datasets

    from lit_hf.data import sources as translation

    raw = datasets.load_dataset("json", data_files={"validation": str(sample_file)}, cache_dir=str(tmp_path / "hf"))
    raw.save_to_disk(str(tmp_path / "saved"))
    options = dict(model_name_or_path=str(tiny_t5_dir), data_cache_dir=str(tmp_path / "cache"))
    saved = TranslationDataModule("en", "ro", dataset_path=str(tmp_path / "saved"), **options)
    saved.prepare_data()
    saved.setup("validate")
    assert saved.datasets["validation"]["target_text"] == [pair["ro"] for pair in pairs_of(sample_file)]

    monkeypatch.setattr(saved, "_tokenize", lambda *args: pytest.fail("tokenized again despite the cache"))
    saved.prepare_data()  # same source, tokenizer and options: the cache answers

    asked = []
    monkeypatch.setattr(translation, "load_hub", lambda *args: asked.append(args) or raw)
    hub_options = dict(dataset_name="wmt/wmt16", dataset_config_name="ro-en", **options)
    hub = TranslationDataModule("en", "ro", **hub_options)
    hub.prepare_data()
    assert asked[0][:2] == ("wmt/wmt16", "ro-en")


def test_fit_splits_share_one_cache_key_after_tokenizing(tiny_t5_dir: Path, sample_file: Path, tmp_path: Path) -> None:
    """Tokenizing with truncation changes the fast tokenizer's state; the cache key must not follow it."""
    files = dict(train_file=str(sample_file), validation_file=str(sample_file), max_source_length=32)
    tokenizer = HubOptions(tokenizer_name=str(tiny_t5_dir))
    data = TranslationDataModule("en", "ro", hub=tokenizer, data_cache_dir=str(tmp_path), **files)
    data.prepare_data()
    data.setup("fit")
    assert len(data.datasets["train"]) == len(data.datasets["validation"]) == 10


# --- end to end through the CLI --------------------------------------------------------------------------------


def test_validate_writes_ordered_predictions_and_bleu_equals_sacrebleu(
    tiny_t5_dir: Path, sample_file: Path, validated: Path, tmp_path: Path
) -> None:
    main(validate_args(tiny_t5_dir, sample_file, tmp_path / "unsorted", "--data.sort_by_length=false"))
    sorted_run, unsorted_run = validated, run_dir(tmp_path / "unsorted")
    hyps = (sorted_run / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    refs = [pair["ro"] for pair in pairs_of(sample_file)]
    assert len(hyps) == len(refs) == 10
    assert hyps == (unsorted_run / "val_predictions.txt").read_text(encoding="utf-8").splitlines()  # same order
    results = read_results(sorted_run)
    assert results["val/bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score  # exactly: logged in float64
    assert results["val/chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert results["val/gen_len"] <= 12 and "val/loss" in results
    assert "max_new_tokens: 12" in (sorted_run / "config.yaml").read_text()  # linked to the target length


@torch.no_grad()
def test_loss_and_hypotheses_equal_plain_transformers(tiny_t5_dir: Path, sample_file: Path, validated: Path) -> None:
    """One sentence at a time through `transformers`: HF's own loss, token-weighted, and greedy `generate`."""
    run = validated
    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir).eval()
    tokenizer = T5Tokenizer.from_pretrained(tiny_t5_dir)
    nll, tokens, hyps = 0.0, 0, []
    for pair in pairs_of(sample_file):
        inputs = tokenizer("translate English to Romanian: " + pair["en"], return_tensors="pt")
        labels = tokenizer(text_target=pair["ro"], max_length=12, truncation=True, return_tensors="pt").input_ids
        nll += model(**inputs, labels=labels).loss.item() * labels.numel()  # HF's loss is the mean over the labels
        tokens += labels.numel()
        generated = model.generate(**inputs, max_new_tokens=12)
        hyps.append(tokenizer.decode(generated[0], skip_special_tokens=True, clean_up_tokenization_spaces=False))
    assert read_results(run)["val/loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert (run / "val_predictions.txt").read_text(encoding="utf-8").splitlines() == [h.strip() for h in hyps]


def test_validate_on_3_processes_equals_1_with_nonzero_bleu(
    tiny_t5_dir: Path, sample_file: Path, validated: Path, tmp_path: Path
) -> None:
    """References made from the model's own outputs (edited), so BLEU is neither 0 nor 100; 10 pairs, 3 ranks."""
    hyps = (validated / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    rows = []
    for i, (pair, hyp) in enumerate(zip(pairs_of(sample_file), hyps, strict=True)):
        words = hyp.split()
        ref = " ".join(words[: len(words) - i % 3]) + (" extra" if i % 2 else "")
        rows.append(json.dumps({"translation": {"en": pair["en"], "ro": ref}}, ensure_ascii=False))
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(rows) + "\n", encoding="utf-8")

    main(validate_args(tiny_t5_dir, edited, tmp_path / "one"))
    run_lit_hf(*validate_args(tiny_t5_dir, edited, tmp_path / "three", "--trainer.devices=3", "--trainer.strategy=ddp"))

    one, three = run_dir(tmp_path / "one"), run_dir(tmp_path / "three")
    refs = [pair["ro"] for pair in pairs_of(edited)]
    written = (three / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert written == (one / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    results_one, results_three = read_results(one), read_results(three)
    bleu = sacrebleu.corpus_bleu(written, [refs]).score
    assert 0 < bleu < 100
    assert results_three["val/bleu"] == bleu == results_one["val/bleu"]
    assert results_three["val/chrf"] == sacrebleu.corpus_chrf(written, [refs]).score == results_one["val/chrf"]
    assert results_three["val/loss"] == pytest.approx(results_one["val/loss"], rel=1e-5)
    assert results_three["val/gen_len"] == pytest.approx(results_one["val/gen_len"], rel=1e-6)


def test_predict_writes_translations_in_input_order(tiny_t5_dir: Path, tmp_path: Path, capsys) -> None:
    sources = ["Short.", "A rather longer sentence to translate here.", "Mid length one.", "Yes", "Another line."]
    file = tmp_path / "sources.txt"
    file.write_text("\n".join(sources) + "\n")
    args = validate_args(tiny_t5_dir, file, tmp_path, "--data.predict_file=" + str(file))
    args[0] = "predict"
    args.remove(f"--data.validation_file={file}")
    main(args)
    run = run_dir(tmp_path)
    assert f"predictions written to {run / 'predictions'}.txt and .jsonl" in capsys.readouterr().out.splitlines()
    lines = (run / "predictions.txt").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(sources) and [row["index"] for row in rows] == list(range(len(sources)))
    assert [row["translation"] for row in rows] == lines
    single = TranslationTask(
        str(tiny_t5_dir), generation=GenerationOptions(max_new_tokens=12)
    ).eval()  # the third source alone, no batch neighbours
    ids = single.tokenizer(["translate English to Romanian: " + sources[2]], return_tensors="pt")
    assert single._generate(dict(ids))[0][0] == lines[2]


def test_short_fit_on_learnable_pairs_raises_bleu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline quickstart, shortened: validation BLEU after a short fit is above BLEU before training."""
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository, as the README runs it
    config = str(REPO / "configs" / "quickstart_translation.yaml")
    common = [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    common += [f"--data.data_cache_dir={tmp_path / 'cache'}", "--data.max_eval_samples=40"]
    main(["validate", "--config", config, *common])
    before = read_results(run_dir(tmp_path))["val/bleu"]
    main(["fit", "--config", config, *common, "--trainer.max_epochs=4", "--model.predict_with_generate=false"])
    checkpoint = next((run_dir(tmp_path) / "checkpoints").glob("*.ckpt"))
    main(["validate", "--config", config, *common, f"--ckpt_path={checkpoint}"])
    after = read_results(run_dir(tmp_path))["val/bleu"]
    assert after > before + 1.0, (before, after)


# --- error cases -----------------------------------------------------------------------------------------------


def test_missing_file_is_one_line_error(tiny_t5_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(validate_args(tiny_t5_dir, tmp_path / "nope.json", tmp_path))
    assert exit_info.value.code == 2
    assert "validation_file" in capsys.readouterr().err


def test_missing_language_key_names_the_option(tiny_t5_dir: Path, sample_file: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(validate_args(tiny_t5_dir, sample_file, tmp_path, "--data.target_lang=de"))
    err = capsys.readouterr().err
    assert "'de'" in err and "target_lang" in err


def test_missing_column_names_the_option(tiny_t5_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "pairs.csv"
    file.write_text("english,romanian\nHello,Salut\n")
    with pytest.raises(SystemExit):
        main(validate_args(tiny_t5_dir, file, tmp_path))
    assert "source_column" in capsys.readouterr().err
    main(validate_args(tiny_t5_dir, file, tmp_path, "--data.source_column=english", "--data.target_column=romanian"))


def test_max_source_length_above_model_positions(tiny_t5_dir: Path, sample_file: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(validate_args(tiny_t5_dir, sample_file, tmp_path, "--data.max_source_length=4096"))
    assert "max_source_length 4096 exceeds the model's 512 positions" in capsys.readouterr().err


def test_constructor_errors(tiny_t5_dir: Path) -> None:
    with pytest.raises(ConfigError, match="both 'en'"):
        TranslationDataModule("en", "en", model_name_or_path=str(tiny_t5_dir), validation_file="x.json")
    with pytest.raises(ConfigError, match="data source"):
        TranslationDataModule("en", "ro", model_name_or_path=str(tiny_t5_dir))
    with pytest.raises(ConfigError, match="from_scratch"):
        TranslationTask(str(tiny_t5_dir), config_overrides="d_model=16")
    with pytest.raises(ConfigError, match="forced_bos_token"):
        TranslationTask(str(tiny_t5_dir), forced_bos_token="ro_RO")


def test_t5_config_without_decoder_start_decodes_from_pad(t5_tokenizer: T5Tokenizer, tmp_path: Path) -> None:
    no_start = {"decoder_start_token_id": None, "n_positions": None}  # a config that names no decoder start
    save_tiny_t5(tmp_path, t5_tokenizer, d_model=16, d_ff=32, num_layers=1, d_kv=8, **no_start)
    task = TranslationTask(str(tmp_path), generation=GenerationOptions(max_new_tokens=3))
    assert task.model.config.decoder_start_token_id == t5_tokenizer.pad_token_id == 0
    ids = task.tokenizer(["Hello"], return_tensors="pt")
    assert len(task._generate(dict(ids))[0]) == 1


def test_t5_in_float16_warns(tiny_t5_dir: Path) -> None:
    task = TranslationTask(str(tiny_t5_dir))
    task._trainer = type("FakeTrainer", (), {"precision": "16-mixed"})()
    with pytest.warns(UserWarning, match="bf16-mixed"):
        task.setup("fit")


def test_pretrained_model_fine_tunes_in_train_mode(tiny_t5_dir: Path) -> None:
    task = TranslationTask(str(tiny_t5_dir))  # from_pretrained, as a user's pretrained checkpoint
    assert all(module.training for module in task.model.modules())
