"""Multiple choice: inputs as run_swag.py builds them, accuracy and loss against a plain forward + numpy, ordered
predictions, 1 vs 3 processes, the export, the error cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import REPO, read_results, run_lit_hf
from runs import cpu_run, family_args, rows_of, run_dir
from transformers import AutoModelForMultipleChoice, BertConfig, BertForMultipleChoice, BertTokenizer

from lit_hf.cli import main
from lit_hf.data.multiple_choice import MultipleChoiceDataModule
from lit_hf.data.multiple_choice_inputs import collate_choices, tokenize_choices
from lit_hf.errors import LitHFError

ENDINGS = [f"ending{i}" for i in range(4)]


@pytest.fixture(scope="module")
def choice_dir(tmp_path_factory: pytest.TempPathFactory, bert_tokenizer: BertTokenizer) -> Path:
    """A 2-layer, 32-wide BERT with a multiple-choice head (wide random weights) and the real BERT vocabulary."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(bert_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, initializer_range=0.5,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny-bert-mc")
    BertForMultipleChoice(config).save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def swag_file(data_dir: Path) -> Path:
    return data_dir / "swag" / "sample.json"  # 10 SWAG examples: not a multiple of 3


def args_for(command: str, model: Path, root: Path, *extra: str) -> list[str]:
    return [
        command,
        *family_args("multiple_choice", model),
        *cpu_run(root),
        "--data.eval_batch_size=4",
        "--data.max_seq_length=64",
        *extra,
    ]


@torch.no_grad()
def reference_logits(model_dir: Path, rows: list[dict], max_length: int = 64) -> np.ndarray:
    """One example at a time, as run_swag.py pairs them: (sent1, sent2 + " " + ending), unpadded. (N, 4)."""
    model = AutoModelForMultipleChoice.from_pretrained(model_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    out = []
    for row in rows:
        pairs = tokenizer(
            [row["sent1"]] * 4, [f"{row['sent2']} {row[e]}" for e in ENDINGS], truncation=True, max_length=max_length,
            padding=True, return_tensors="pt",
        )  # fmt: skip
        out.append(model(**{k: v[None] for k, v in pairs.items()}).logits[0].double().numpy())
    return np.stack(out)


def reference_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return {"loss": float(loss), "accuracy": float((logits.argmax(-1) == labels).mean())}


@pytest.fixture(scope="module")
def validated(choice_dir: Path, swag_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    root = tmp_path_factory.mktemp("mc-validated")
    main(args_for("validate", choice_dir, root, f"--data.validation_file={swag_file}"))
    return read_results(run_dir(root))


# --- pure functions -------------------------------------------------------------------------------------------


def test_tokenize_choices_pairs_context_with_question_and_ending(
    bert_tokenizer: BertTokenizer, swag_file: Path
) -> None:
    rows = rows_of(swag_file)[:2]
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    out = tokenize_choices(
        batch, tokenizer=bert_tokenizer, context_column="sent1", question_column="sent2", ending_columns=ENDINGS,
        choices_column=None, num_choices=4, max_length=64, padding=False,
    )  # fmt: skip
    assert len(out["input_ids"]) == 2 and all(len(choices) == 4 for choices in out["input_ids"])
    expected = bert_tokenizer(rows[1]["sent1"], rows[1]["sent2"] + " " + rows[1]["ending3"])
    assert out["input_ids"][1][3] == expected["input_ids"]
    assert out["token_type_ids"][1][3] == expected["token_type_ids"]
    assert out["choices"][0] == [rows[0][e] for e in ENDINGS]


def test_collate_pads_every_choice_to_the_batch_longest(bert_tokenizer: BertTokenizer) -> None:
    examples = [
        {"input_ids": [[101, 5, 102], [101, 5, 6, 7, 102]], "attention_mask": [[1] * 3, [1] * 5], "labels": 1,
         "index": 0, "choices": ["a", "b"]},
        {"input_ids": [[101, 102], [101, 8, 102]], "attention_mask": [[1] * 2, [1] * 3], "labels": 0, "index": 1,
         "choices": ["c", "d"]},
    ]  # fmt: skip
    batch = collate_choices(examples, tokenizer=bert_tokenizer, pad_to_multiple_of=None)
    assert batch["input_ids"].shape == (2, 2, 5) and batch["attention_mask"][1, 0].tolist() == [1, 1, 0, 0, 0]
    assert batch["input_ids"][1, 0, 2:].tolist() == [0, 0, 0] and batch["labels"].tolist() == [1, 0]
    assert collate_choices(examples, tokenizer=bert_tokenizer, pad_to_multiple_of=8)["input_ids"].shape == (2, 2, 8)


# --- end to end through the CLI --------------------------------------------------------------------------------


def test_validate_equals_plain_forward_and_numpy(choice_dir: Path, swag_file: Path, validated: dict) -> None:
    rows = rows_of(swag_file)
    expected = reference_scores(reference_logits(choice_dir, rows), np.array([row["label"] for row in rows]))
    assert 0 < expected["accuracy"] < 1  # the wide random head gets some right, some wrong
    assert validated["val/accuracy"] == expected["accuracy"]
    assert validated["val/loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_validate_on_3_processes_equals_1(choice_dir: Path, swag_file: Path, validated: dict, tmp_path: Path) -> None:
    run_lit_hf(
        *args_for("validate", choice_dir, tmp_path, f"--data.validation_file={swag_file}"),
        "--trainer.devices=3",
        "--trainer.strategy=ddp",
    )
    three = read_results(run_dir(tmp_path))
    print(f"1 process: {validated}; 3 processes: {three}")
    assert three["val/accuracy"] == validated["val/accuracy"]
    assert three["val/loss"] == pytest.approx(validated["val/loss"], rel=1e-6)  # float32 logits, batched differently


def test_predict_writes_chosen_endings_and_probabilities_in_order(
    choice_dir: Path, swag_file: Path, tmp_path: Path
) -> None:
    main(args_for("predict", choice_dir, tmp_path, f"--data.predict_file={swag_file}", "--data.eval_batch_size=3"))
    run, rows = run_dir(tmp_path), rows_of(swag_file)
    written = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    logits = reference_logits(choice_dir, rows)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert [row["index"] for row in written] == list(range(len(rows)))
    np.testing.assert_allclose([row["probabilities"] for row in written], probabilities, rtol=1e-4, atol=1e-6)
    chosen = [row[f"ending{i}"] for row, i in zip(rows, logits.argmax(-1), strict=True)]
    assert [row["choice"] for row in written] == chosen
    assert (run / "predictions.txt").read_text(encoding="utf-8").splitlines() == chosen


def test_generic_layout_scores_as_the_reference(choice_dir: Path, swag_file: Path, tmp_path: Path) -> None:
    """A context column, a list-of-choices column and a label index; the question folded into each choice."""
    rows = rows_of(swag_file)
    generic = tmp_path / "generic.jsonl"
    items = [
        {"ctx": r["sent1"], "options": [f"{r['sent2']} {r[e]}" for e in ENDINGS], "answer": r["label"]} for r in rows
    ]
    generic.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    columns = ["--data.context_column=ctx", "--data.choices_column=options", "--data.label_column=answer"]
    main(args_for("validate", choice_dir, tmp_path, f"--data.validation_file={generic}", *columns))
    expected = reference_scores(reference_logits(choice_dir, rows), np.array([r["label"] for r in rows]))
    results = read_results(run_dir(tmp_path))
    assert results["val/accuracy"] == expected["accuracy"]
    assert results["val/loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_export_equals_the_trained_task(choice_dir: Path, swag_file: Path, tmp_path: Path) -> None:
    """fit a few steps; predict from the checkpoint; a plain forward of the saved `huggingface/` gives the same."""
    fit = [
        "--trainer.max_steps=3",
        f"--data.train_file={swag_file}",
        "--data.batch_size=4",
        "--model.optim.learning_rate=1e-3",
    ]
    main(args_for("fit", choice_dir, tmp_path / "fit", *fit))
    fitted = run_dir(tmp_path / "fit")
    checkpoint = next((fitted / "checkpoints").glob("*.ckpt"))
    main(args_for("predict", choice_dir, tmp_path, f"--data.predict_file={swag_file}", f"--ckpt_path={checkpoint}"))
    written = [json.loads(line) for line in (run_dir(tmp_path) / "predictions.jsonl").read_text().splitlines()]
    logits = reference_logits(fitted / "huggingface", rows_of(swag_file))
    assert not np.allclose(logits, reference_logits(choice_dir, rows_of(swag_file)))  # training changed the model
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose([row["probabilities"] for row in written], probabilities, rtol=1e-4, atol=1e-6)


def test_short_fit_on_the_quickstart_beats_chance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository, as the README runs it
    config = str(REPO / "configs" / "quickstart_multiple_choice.yaml")
    common = [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    common += [f"--data.data_cache_dir={tmp_path / 'cache'}", "--data.max_eval_samples=100"]
    main(["fit", "--config", config, *common, "--trainer.max_epochs=2", "--trainer.val_check_interval=1.0"])
    assert read_results(run_dir(tmp_path))["val/accuracy"] > 0.35  # chance is 0.25


# --- error cases -----------------------------------------------------------------------------------------------


def test_missing_column_names_the_option(choice_dir: Path, swag_file: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            args_for(
                "validate", choice_dir, tmp_path, f"--data.validation_file={swag_file}", "--data.question_column=q"
            )
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'q'" in err and "question_column" in err


def test_wrong_number_of_choices_is_an_error(choice_dir: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "uneven.jsonl"
    items = [
        {"context": "A", "choices": ["x", "y", "z"], "label": 0},
        {"context": "B", "choices": ["x", "y"], "label": 1},
    ]
    file.write_text("".join(json.dumps(item) + "\n" for item in items))
    with pytest.raises(SystemExit):
        main(
            args_for(
                "validate", choice_dir, tmp_path, f"--data.validation_file={file}", "--data.choices_column=choices"
            )
        )
    assert "has 2 choices, not 3" in capsys.readouterr().err


def test_label_out_of_range_is_an_error(choice_dir: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "labels.jsonl"
    file.write_text(json.dumps({"context": "A", "choices": ["x", "y"], "label": 2}) + "\n")
    with pytest.raises(SystemExit):
        main(
            args_for(
                "validate", choice_dir, tmp_path, f"--data.validation_file={file}", "--data.choices_column=choices"
            )
        )
    assert "row 1: label 2 is not among the choice indices 0..1" in capsys.readouterr().err


def test_hidden_labels_cannot_be_scored(choice_dir: Path, swag_file: Path, tmp_path: Path, capsys) -> None:
    """SWAG's hub test split marks its labels -1: `validate` says to use `predict`, which reads it."""
    file = tmp_path / "hidden.jsonl"
    file.write_text("".join(json.dumps({**row, "label": -1}) + "\n" for row in rows_of(swag_file)[:4]))
    with pytest.raises(SystemExit):
        main(args_for("validate", choice_dir, tmp_path, f"--data.validation_file={file}"))
    assert "use `predict`" in capsys.readouterr().err
    main(args_for("predict", choice_dir, tmp_path, f"--data.test_file={file}"))
    assert len((run_dir(tmp_path) / "predictions.txt").read_text().splitlines()) == 4


def test_constructor_errors(choice_dir: Path) -> None:
    with pytest.raises(LitHFError, match="not both"):
        MultipleChoiceDataModule(
            str(choice_dir), validation_file="x.json", choices_column="c", ending_columns=["a", "b"]
        )
    with pytest.raises(LitHFError, match="data source"):
        MultipleChoiceDataModule(str(choice_dir))
