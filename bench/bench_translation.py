"""Generation speed at evaluation: lit_hf `validate` against `transformers.Seq2SeqTrainer.predict`, same model and data.

    python bench/bench_translation.py            # trains the quickstart's byte-level T5 for about two minutes first
    python bench/bench_translation.py --model-dir DIR --pairs 400 --batch-size 32 --max-new-tokens 160

Both sides get the same tokenized sources, batch size, greedy decoding (or --num-beams) and maximum length, on
the CPU in one process, and both compute the loss besides generating. lit_hf cuts batches from examples sorted by
source length, runs the encoder once for loss and generation, and decodes each batch at once; Seq2SeqTrainer
generates in dataset order and keeps the padded outputs until the end. lit_hf also runs unsorted
(`sort_by_length=False`), to show what sorting alone saves. Items join one to --max-join (3) of the
quickstart's sentence pairs, so lengths vary: the model is trained on such items (train split) so that it ends its
translations, and measured on items made from the validation split, which it never saw. The report counts the
hypotheses that ran to --max-new-tokens instead of ending. Needs `accelerate` (the `bench` extra) for
Seq2SeqTrainer.
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import sacrebleu
import torch
from datasets import Dataset
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from lit_hf.cli import main as lit_hf_main
from lit_hf.data import TranslationDataModule
from lit_hf.tasks import TranslationTask

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart_translation.yaml"
PAIRS = REPO / "configs" / "quickstart" / "en-de-phrases"


def train_model(workdir: Path, epochs: int, max_join: int) -> Path:
    """The quickstart's fit on joined training items; returns a `save_pretrained` directory of the trained model."""
    root = workdir / "train"
    train, validation = workdir / "train.tsv", workdir / "train-validation.tsv"
    write_pairs(train, joined_pairs("train", 2400, max_join, seed=1))
    write_pairs(validation, joined_pairs("validation", 100, max_join, seed=2))
    args = [f"--trainer.max_epochs={epochs}", f"--trainer.default_root_dir={root}"]
    args += [f"--data.train_file={train}", f"--data.validation_file={validation}"]
    args += ["--data.max_source_length=256", "--data.max_target_length=256", "--model.predict_with_generate=false"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    lit_hf_main(["fit", "--config", str(QUICKSTART), *args, *quiet])
    checkpoint = next(root.rglob("*.ckpt"))
    task = TranslationTask.load_from_checkpoint(checkpoint, map_location="cpu")
    out = workdir / "model"
    task.model.save_pretrained(out)
    task.tokenizer.save_pretrained(out)
    return out


def joined_pairs(split: str, count: int, max_join: int, seed: int) -> list[tuple[str, str]]:
    """`count` items, each 1 to `max_join` random quickstart pairs of `split` joined by spaces."""
    rows = [line.split("\t") for line in (PAIRS / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    rng, items = random.Random(seed), []
    while len(items) < count:
        chunk = rng.sample(rows, rng.randint(1, max_join))
        items.append((" ".join(en for en, _ in chunk), " ".join(de for _, de in chunk)))
    return items


def write_pairs(path: Path, items: list[tuple[str, str]]) -> None:
    path.write_text("en\tde\n" + "".join(f"{en}\t{de}\n" for en, de in items), encoding="utf-8")


def run_lit_hf(
    model_dir: Path, file: Path, workdir: Path, args: argparse.Namespace, sort: bool = True
) -> tuple[float, list[str]]:
    task = TranslationTask(str(model_dir), num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    data = TranslationDataModule(
        str(model_dir),
        "en",
        "de",
        config_name_or_path=str(model_dir),
        validation_file=str(file),
        source_prefix="",
        max_source_length=256,
        max_target_length=args.max_new_tokens,
        eval_batch_size=args.batch_size,
        sort_by_length=sort,
        data_cache_dir=str(workdir.parent / "cache"),  # shared by all runs: tokenized once, untimed
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=str(workdir / "lit")
    )
    start = time.perf_counter()
    trainer.validate(task, datamodule=data, verbose=False)
    seconds = time.perf_counter() - start
    return seconds, (workdir / "lit" / "val_predictions.txt").read_text(encoding="utf-8").splitlines()


def run_hf(
    model_dir: Path, items: list[tuple[str, str]], workdir: Path, args: argparse.Namespace
) -> tuple[float, list[str]]:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    encoded = tokenizer([en for en, _ in items], text_target=[de for _, de in items], max_length=256, truncation=True)
    dataset = Dataset.from_dict(dict(encoded))
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_eval_batch_size=args.batch_size,
        predict_with_generate=True,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(
        model=model, args=training_args, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model)
    )
    start = time.perf_counter()
    output = trainer.predict(dataset, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    predictions = np.where(output.predictions != -100, output.predictions, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(predictions, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    seconds = time.perf_counter() - start
    return seconds, [text.strip() for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a trained seq2seq model directory (default: train one)")
    parser.add_argument("--train-epochs", type=int, default=8)
    parser.add_argument("--max-join", type=int, default=3, help="sentence pairs per item, at most; 1: single ones")
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side; the fastest counts")
    args = parser.parse_args()
    os.chdir(REPO)  # the quickstart config's paths are relative to the repository
    with tempfile.TemporaryDirectory(prefix="bench-translation-") as tmp:
        workdir = Path(tmp)
        model_dir = args.model_dir or train_model(workdir, args.train_epochs, args.max_join)
        items = joined_pairs("validation", args.pairs, args.max_join, seed=0)
        write_pairs(workdir / "pairs.tsv", items)
        run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / "warm", args)  # fills the cache, warms the kernels
        lit, unsorted, hf = [], [], []
        for n in range(args.repeats):
            lit.append(run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / f"lit{n}", args))
            unsorted.append(run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / f"unsorted{n}", args, sort=False))
            hf.append(run_hf(model_dir, items, workdir / f"hf{n}", args))
        report = summary(min(lit), min(hf), items, AutoTokenizer.from_pretrained(model_dir), args)
        report["lit_hf_unsorted_sentences_per_s"] = round(len(items) / min(unsorted)[0], 1)  # what sorting saves
        report["unsorted_outputs_identical"] = min(unsorted)[1] == min(lit)[1]
    print(json.dumps(report, indent=2))


def summary(
    lit: tuple[float, list[str]],
    hf: tuple[float, list[str]],
    items: list[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    args: argparse.Namespace,
) -> dict[str, object]:
    """The report: both sides' speed from their fastest run, and how the outputs compare."""
    (lit_seconds, lit_texts), (hf_seconds, hf_texts) = lit, hf
    token_counts = [len(ids) for ids in tokenizer(lit_texts)["input_ids"]]  # with the end token the tokenizer adds
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "pairs": len(items),
        "batch_size": args.batch_size,
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
        "mean_hypothesis_tokens": round(sum(token_counts) / len(token_counts), 1),
        "hypotheses_cut_at_max_new_tokens": sum(n > args.max_new_tokens for n in token_counts),  # never ended
        "bleu": round(sacrebleu.corpus_bleu(lit_texts, [[de for _, de in items]]).score, 2),
        "lit_hf_sentences_per_s": round(len(items) / lit_seconds, 1),
        "seq2seq_trainer_sentences_per_s": round(len(items) / hf_seconds, 1),
        "speedup": round(hf_seconds / lit_seconds, 2),
        "identical_outputs": lit_texts == hf_texts,
        "differing_outputs": sum(a != b for a, b in zip(lit_texts, hf_texts, strict=True)),
    }


if __name__ == "__main__":
    main()
