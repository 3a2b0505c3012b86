"""Summarization: data module, task, ROUGE equal to rouge_score, ordered predictions, 1 vs 3 processes, the
export against plain `generate`, the error cases."""

import json
from pathlib import Path

import pytest
import torch
from nltk.tokenize.punkt import PunktSentenceTokenizer
from reference import REPO, read_results, run_lit_hf
from rouge_score import rouge_scorer
from runs import cpu_run, family_args, rows_of, run_dir
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5ForConditionalGeneration, T5Tokenizer

from lit_hf.cli import main
from lit_hf.data.seq2seq import SummarizationDataModule
from lit_hf.data.seq2seq_inputs import tokenize_pairs
from lit_hf.metrics import CorpusRouge, sentences_per_line

TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@pytest.fixture(scope="module")
def xsum_file(data_dir: Path) -> Path:
    return data_dir / "xsum" / "sample.json"  # 10 XSum documents with summaries: not a multiple of 3


def args_for(command: str, model: Path, root: Path, *extra: str) -> list[str]:
    return [
        command,
        *family_args("summarization", model),
        *cpu_run(root),
        "--data.max_source_length=128",
        "--data.max_target_length=16",
        "--data.eval_batch_size=4",
        *extra,
    ]


def reference_rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """rouge_score with stemming on texts with one sentence per line (nltk Punkt, untrained), mean F x 100."""
    scorer = rouge_scorer.RougeScorer(list(TYPES), use_stemmer=True)
    punkt = PunktSentenceTokenizer()
    totals = dict.fromkeys(TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score("\n".join(punkt.tokenize(ref.strip())), "\n".join(punkt.tokenize(hyp.strip())))
        for name in TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(hypotheses) for name, total in totals.items()}


@pytest.fixture(scope="module")
def validated(tiny_t5_dir: Path, xsum_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sum-validated")
    main(args_for("validate", tiny_t5_dir, root, f"--data.validation_file={xsum_file}"))
    return run_dir(root)


@pytest.fixture(scope="module")
def edited_file(validated: Path, xsum_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """References made from the model's own outputs (cut, extended, two sentences), so ROUGE is neither 0 nor 100."""
    hyps = (validated / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    rows = []
    for i, (row, hyp) in enumerate(zip(rows_of(xsum_file), hyps, strict=True)):
        words = hyp.split()
        summary = " ".join(words[: len(words) - i % 3]) + (". And more words here." if i % 2 else "")
        rows.append(json.dumps({"document": row["document"], "summary": summary}, ensure_ascii=False))
    path = tmp_path_factory.mktemp("edited") / "edited.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# --- pure functions -------------------------------------------------------------------------------------------


def test_tokenize_documents_prefix_labels_and_raw_summaries(t5_tokenizer: T5Tokenizer) -> None:
    batch = {"document": ["A long story.", "Short."], "summary": ["Story.", None]}
    out = tokenize_pairs(
        batch, tokenizer=t5_tokenizer, source=("document", None), target=("summary", None), prefix="summarize: ",
        max_source_length=64, max_target_length=8, pad_to_max_length=False, ignore_pad_token_for_loss=True,
    )  # fmt: skip
    assert out["input_ids"][0] == t5_tokenizer("summarize: A long story.")["input_ids"]
    assert out["labels"][0] == t5_tokenizer("Story.")["input_ids"] and out["target_text"] == ["Story.", ""]


CASES = [
    (["the cats were sitting on the mat. they slept.", "hello there"], ["the cat sat on a mat.\nIt slept.", "hi"]),
    (["Police arrested two men. Both were charged.", "x", "a b c"], ["Two men were arrested.", "y z", "a b c d"]),
]


@pytest.mark.parametrize("hyps,refs", CASES)
def test_corpus_rouge_equals_rouge_score_however_split(hyps: list[str], refs: list[str]) -> None:
    expected = reference_rouge(hyps, refs)
    assert 0 < expected["rouge1"] < 100
    for size in (1, 2):
        shards = [CorpusRouge(), CorpusRouge()]
        for start in range(0, len(hyps), size):  # batches spread over two "processes", as a sum reduction sees them
            shards[(start // size) % 2].update(hyps[start : start + size], refs[start : start + size])
        shards[0].fmeasure += shards[1].fmeasure
        shards[0].count += shards[1].count
        got = {name: value.item() for name, value in shards[0].compute().items()}
        assert got == pytest.approx(expected, rel=1e-12)


def test_sentences_per_line_needs_no_download() -> None:
    assert sentences_per_line(" It rained. Then it snowed!  Why? ") == "It rained.\nThen it snowed!\nWhy?"
    assert sentences_per_line("Prices rose 2.5% in May. Mr. Lee left.") == "Prices rose 2.5% in May.\nMr.\nLee left."


def test_rouge_lsum_scores_sentences_split_as_run_summarization() -> None:
    """rougeLsum reads one sentence per line: with the sentences in another order it differs from rougeL; on the
    unsplit texts rouge_score's rougeLsum would equal rougeL."""
    hyp, ref = "the cats were sitting on the mat. they slept.", "It slept. The cat sat on a mat."
    metric = CorpusRouge()
    metric.update([hyp], [ref])
    got = metric.compute()
    unsplit = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True).score(ref, hyp)
    assert unsplit["rougeLsum"].fmeasure == unsplit["rougeL"].fmeasure
    assert got["rougeL"].item() == pytest.approx(100 * unsplit["rougeL"].fmeasure, rel=1e-12)
    assert got["rougeLsum"].item() > got["rougeL"].item()
    assert got["rougeLsum"].item() == pytest.approx(reference_rouge([hyp], [ref])["rougeLsum"], rel=1e-12)


# --- end to end through the CLI --------------------------------------------------------------------------------


@torch.no_grad()
def test_loss_and_summaries_equal_plain_transformers(tiny_t5_dir: Path, xsum_file: Path, validated: Path) -> None:
    """One document at a time through `transformers`: HF's own loss, token-weighted, and greedy `generate`."""
    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir).eval()
    tokenizer = T5Tokenizer.from_pretrained(tiny_t5_dir)
    nll, tokens, hyps = 0.0, 0, []
    for row in rows_of(xsum_file):
        inputs = tokenizer("summarize: " + row["document"], max_length=128, truncation=True, return_tensors="pt")
        labels = tokenizer(text_target=row["summary"], max_length=16, truncation=True, return_tensors="pt").input_ids
        nll += model(**inputs, labels=labels).loss.item() * labels.numel()  # HF's loss is the mean over the labels
        tokens += labels.numel()
        generated = model.generate(**inputs, max_new_tokens=16)
        hyps.append(tokenizer.decode(generated[0], skip_special_tokens=True, clean_up_tokenization_spaces=False))
    results = read_results(validated)
    assert "max_new_tokens: 16" in (validated / "config.yaml").read_text()  # linked to the target length
    assert results["val/loss"] == pytest.approx(nll / tokens, rel=1e-5)
    written = (validated / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert written == [h.strip() for h in hyps]
    expected = reference_rouge(written, [row["summary"] for row in rows_of(xsum_file)])
    assert {name: results[f"val/{name}"] for name in TYPES} == pytest.approx(expected, rel=1e-12)


def test_validate_on_3_processes_equals_1_and_rouge_score(edited_file: Path, tiny_t5_dir: Path, tmp_path: Path) -> None:
    main(args_for("validate", tiny_t5_dir, tmp_path / "one", f"--data.validation_file={edited_file}"))
    three_args = args_for("validate", tiny_t5_dir, tmp_path / "three", f"--data.validation_file={edited_file}")
    run_lit_hf(*three_args, "--trainer.devices=3", "--trainer.strategy=ddp")
    one, three = run_dir(tmp_path / "one"), run_dir(tmp_path / "three")
    written = (three / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert written == (one / "val_predictions.txt").read_text(encoding="utf-8").splitlines()
    expected = reference_rouge(written, [row["summary"] for row in rows_of(edited_file)])
    assert 0 < expected["rougeLsum"] < 100
    results_one, results_three = read_results(one), read_results(three)
    print(f"1 process: {results_one}; 3 processes: {results_three}")
    for name in TYPES:
        assert results_three[f"val/{name}"] == pytest.approx(expected[name], rel=1e-12)
        assert results_one[f"val/{name}"] == pytest.approx(expected[name], rel=1e-12)
    assert results_three["val/loss"] == pytest.approx(results_one["val/loss"], rel=1e-5)
    assert results_three["val/gen_len"] == results_one["val/gen_len"]


def test_export_equals_pipeline_and_predictions_in_input_order(
    tiny_t5_dir: Path, xsum_file: Path, tmp_path: Path
) -> None:
    """fit a few steps; predict from the checkpoint; plain `generate` on `huggingface/` gives the same (transformers 5
    removed the `summarization` pipeline: `pipeline("summarization")` raises KeyError)."""
    fit = [
        f"--data.train_file={xsum_file}",
        "--trainer.max_steps=2",
        "--data.batch_size=4",
        "--model.optim.learning_rate=1e-4",
    ]
    main(args_for("fit", tiny_t5_dir, tmp_path / "fit", *fit))
    fitted = run_dir(tmp_path / "fit")
    documents = [row["document"].split("\n")[0] for row in rows_of(xsum_file)][:5]  # short: nothing truncated
    file = tmp_path / "documents.txt"
    file.write_text("\n".join(documents) + "\n", encoding="utf-8")
    checkpoint = next((fitted / "checkpoints").glob("*.ckpt"))
    main(args_for("predict", tiny_t5_dir, tmp_path, f"--data.predict_file={file}", f"--ckpt_path={checkpoint}"))
    run = run_dir(tmp_path)
    lines = (run / "predictions.txt").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["index"] for row in rows] == list(range(5)) and [row["summary"] for row in rows] == lines
    exported = AutoModelForSeq2SeqLM.from_pretrained(fitted / "huggingface").eval()
    tokenizer = AutoTokenizer.from_pretrained(fitted / "huggingface")
    assert exported.config.task_specific_params == {"summarization": {"prefix": "summarize: "}}  # T5's default
    card = (fitted / "huggingface" / "README.md").read_text()
    assert "pipeline_tag: summarization" in card and "tokenizer('summarize: ...', return_tensors=\"pt\")" in card
    assert not torch.equal(
        exported.lm_head.weight, T5ForConditionalGeneration.from_pretrained(tiny_t5_dir).lm_head.weight
    )
    summaries = []
    for doc in documents:  # one at a time, as a pipeline with batch_size=1 would
        with torch.no_grad():
            ids = exported.generate(**tokenizer("summarize: " + doc, return_tensors="pt"), max_new_tokens=16)
        summaries.append(tokenizer.decode(ids[0], skip_special_tokens=True, clean_up_tokenization_spaces=False))
    assert [summary.strip() for summary in summaries] == lines
    assert len(set(lines)) > 1  # the summaries depend on the documents


def test_short_fit_on_the_quickstart_raises_rouge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository, as the README runs it
    config = str(REPO / "configs" / "quickstart_summarization.yaml")
    common = [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    common += [f"--data.data_cache_dir={tmp_path / 'cache'}", "--data.max_eval_samples=20"]
    main(["validate", "--config", config, *common])
    before = read_results(run_dir(tmp_path))["val/rouge1"]
    main(["fit", "--config", config, *common, "--trainer.max_epochs=5", "--model.predict_with_generate=false"])
    checkpoint = run_dir(tmp_path) / "checkpoints" / "last.ckpt"  # the config also keeps step checkpoints
    main(["validate", "--config", config, *common, f"--ckpt_path={checkpoint}"])
    after = read_results(run_dir(tmp_path))["val/rouge1"]
    assert after > before + 10, (before, after)


# --- error cases -----------------------------------------------------------------------------------------------


def test_missing_summary_column_names_the_option(tiny_t5_dir: Path, xsum_file: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            args_for(
                "validate", tiny_t5_dir, tmp_path, f"--data.validation_file={xsum_file}", "--data.summary_column=abc"
            )
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'abc'" in err and "summary_column" in err


def test_hub_columns_and_t5_prefix(tiny_t5_dir: Path, xsum_file: Path, tmp_path: Path, monkeypatch) -> None:
    import datasets

    from lit_hf.data import sources

    raw = datasets.load_dataset("json", data_files={"validation": str(xsum_file)}, cache_dir=str(tmp_path / "hf"))
    renamed = raw.rename_columns({"document": "article", "summary": "highlights"})  # CNN/DailyMail's names
    monkeypatch.setattr(sources, "load_hub", lambda *args: renamed)
    options = dict(dataset_name="abisee/cnn_dailymail", dataset_config_name="3.0.0", data_cache_dir=str(tmp_path))
    data = SummarizationDataModule(str(tiny_t5_dir), **options)
    data.prepare_data()
    data.setup("validate")
    assert data.datasets["validation"]["target_text"] == [row["summary"] for row in rows_of(xsum_file)]
    assert data.prefix == "summarize: "
