"""Generation speed at evaluation: lit_hf `validate` against `transformers.Seq2SeqTrainer.predict`, same model and data.

    python bench/bench_translation.py            # trains the quickstart's byte-level T5 for about two minutes first
    python bench/bench_translation.py --model-dir DIR --pairs 400 --batch-size 32 --max-new-tokens 160
    python bench/bench_translation.py --vocab t5  # a T5 with the real t5-small vocabulary on WMT16 en-ro sentences

Both sides get the same tokenized sources, batch size, greedy decoding (or --num-beams) and maximum length, on
the CPU in one process, and both compute the loss besides generating. lit_hf cuts batches from examples sorted by
source length, runs the encoder once for loss and generation, and decodes each batch at once; Seq2SeqTrainer
generates in dataset order and keeps the padded outputs until the end. lit_hf also runs unsorted
(`sort_by_length=False`), to show what sorting alone saves. Items join one to --max-join (3) of the
quickstart's sentence pairs, so lengths vary: the model is trained on such items (train split) so that it ends its
translations, and measured on items made from the validation split, which it never saw. The report counts the
hypotheses that ran to --max-new-tokens instead of ending. Needs `accelerate` (the `bench` extra) for
Seq2SeqTrainer.

`--vocab t5` is the hard case: a T5 with t5-small's 32,128-token SentencePiece vocabulary (so the LM head
dominates every step) and a smaller body (--t5-shape), trained briefly from scratch on sentences of the WMT16
en-ro training sample (../shared/data/wmt16/wmt_en_ro/train.json), so that its outputs run to the limit (the
report counts them); measured on items joined from the sentences of the validation sample (wmt_en_ro/val.json),
which it never saw. Its defaults are 96 items and 64 new tokens (at 160, `Seq2SeqTrainer` takes minutes a run).
"""

import argparse
import csv
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import sacrebleu
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from lit_hf.cli import main as lit_hf_main
from lit_hf.data import TranslationDataModule
from lit_hf.options import GenerationOptions
from lit_hf.tasks import TranslationTask

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart_translation.yaml"
PAIRS = REPO / "configs" / "quickstart" / "en-de-phrases"
SHARED = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
# In SHARED/wmt16. Not sample.json for training: its short Europarl "see Minutes" lines teach the model to end every
# output after about 15 tokens, which is not the hard case.
WMT16 = {"train": ["wmt_en_ro/train.json"], "validation": ["wmt_en_ro/val.json"]}
TARGET = {"byte": "de", "t5": "ro"}  # the target language (column) of each --vocab


def train_model(workdir: Path, args: argparse.Namespace) -> Path:
    """The quickstart's fit on joined training items; returns a `save_pretrained` directory of the trained model.
    With `--vocab t5`, the fit starts from a random T5 with the t5-small vocabulary instead of the byte-level one."""
    root = workdir / "train"
    train, validation = workdir / "train.tsv", workdir / "train-validation.tsv"
    write_pairs(train, joined_pairs("train", args.train_items, args.max_join, seed=1, vocab=args.vocab), args.vocab)
    write_pairs(validation, joined_pairs("validation", 100, args.max_join, seed=2, vocab=args.vocab), args.vocab)
    args_ = [f"--trainer.max_epochs={args.train_epochs}", f"--trainer.default_root_dir={root}"]
    args_ += [f"--data.train_file={train}", f"--data.validation_file={validation}"]
    args_ += ["--data.max_source_length=256", "--data.max_target_length=256", "--model.predict_with_generate=false"]
    if args.vocab == "t5":
        start = random_t5(workdir / "random-t5", args.t5_shape)
        args_ += [f"--model.model_name_or_path={start}", "--model.from_scratch=false", "--data.target_lang=ro"]
        args_ += [f"--model.optim.learning_rate={args.train_lr}", "--trainer.limit_val_batches=0"]  # loss only: untimed
    args = args_
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    lit_hf_main(["fit", "--config", str(QUICKSTART), *args, *quiet])
    checkpoint = next(root.rglob("*.ckpt"))
    task = TranslationTask.load_from_checkpoint(checkpoint, map_location="cpu")
    out = workdir / "model"
    task.model.save_pretrained(out)
    task.tokenizer.save_pretrained(out)
    return out


def random_t5(path: Path, shape: str) -> Path:
    """A T5 with random weights, t5-small's vocabulary size (32,128) and SentencePiece tokenizer, and the body
    `shape` gives ("d_model=256,num_layers=4,...": T5Config names; t5-small is 512 wide, 6+6 layers)."""
    torch.manual_seed(0)
    sizes = {key: int(value) for key, value in (item.split("=") for item in shape.split(","))}
    config = T5Config(vocab_size=32128, decoder_start_token_id=0, n_positions=512, dropout_rate=0.0, **sizes)
    T5ForConditionalGeneration(config).save_pretrained(path)
    T5Tokenizer.from_pretrained(SHARED / "tokenizers" / "t5-small").save_pretrained(path)
    return path


def wmt16_sentences(split: str) -> list[tuple[str, str]]:
    """The en-ro pairs of the WMT16 samples of `split`, cut into sentence pairs where both sides have as many
    sentences (most do: the items are short documents), else kept whole."""
    pairs = []
    for name in WMT16[split]:
        for line in (SHARED / "wmt16" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                pair = json.loads(line)["translation"]
                en, ro = (re.split(r"(?<=[.!?])\s+", pair[lang].strip()) for lang in ("en", "ro"))
                pairs += list(zip(en, ro, strict=True)) if len(en) == len(ro) else [(pair["en"], pair["ro"])]
    return pairs


def joined_pairs(split: str, count: int, max_join: int, seed: int, vocab: str = "byte") -> list[tuple[str, str]]:
    """`count` items, each 1 to `max_join` random pairs of `split` joined by spaces: the quickstart's pairs, or
    with `vocab="t5"` the WMT16 samples' sentence pairs."""
    if vocab == "t5":
        rows = wmt16_sentences(split)
    else:
        rows = [line.split("\t") for line in (PAIRS / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    rng, items = random.Random(seed), []
    while len(items) < count:
        chunk = rng.sample(rows, rng.randint(1, max_join))
        items.append((" ".join(en for en, _ in chunk), " ".join(de for _, de in chunk)))
    return items


def write_pairs(path: Path, items: list[tuple[str, str]], vocab: str = "byte") -> None:
    """A TSV file that reads back as `items`: a field that starts with a quote is quoted (a bare leading quote
    would be read as quoting and dropped, so lit_hf would translate other text than the peer)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["en", TARGET[vocab]])
        writer.writerows(items)


def run_lit_hf(
    model_dir: Path, file: Path, workdir: Path, args: argparse.Namespace, sort: bool = True, drop: bool = True
) -> tuple[float, list[str]]:
    generation = GenerationOptions(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    task = TranslationTask(str(model_dir), generation=generation, drop_finished=drop)
    data = TranslationDataModule(
        "en",
        TARGET[args.vocab],
        model_name_or_path=str(model_dir),
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
    args.cut_at_limit = int((predictions[:, 1:] != model.generation_config.eos_token_id).all(-1).sum())  # no end
    return seconds, [text.strip() for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a trained seq2seq model directory (default: train one)")
    parser.add_argument("--vocab", choices=["byte", "t5"], default="byte", help="t5: the t5-small vocabulary, WMT16")
    parser.add_argument("--t5-shape", default="d_model=256,d_ff=1024,d_kv=64,num_heads=4,num_layers=4")
    parser.add_argument("--train-epochs", type=int, default=None, help="default: 8 (byte), 1 (t5)")
    parser.add_argument("--train-items", type=int, default=None, help="default: 2400 (byte), 800 (t5)")
    parser.add_argument("--train-lr", type=float, default=3e-3, help="the t5 fit's peak learning rate")
    parser.add_argument("--max-join", type=int, default=3, help="sentence pairs per item, at most; 1: single ones")
    parser.add_argument("--pairs", type=int, default=None, help="default: 400 (byte), 96 (t5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 160 (byte), 64 (t5)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side; the fastest counts")
    parser.add_argument("--skip-unsorted", action="store_true", help="leave out lit_hf's sort_by_length=false run")
    args = parser.parse_args()
    args.train_epochs = args.train_epochs or (8 if args.vocab == "byte" else 1)
    args.train_items = args.train_items or (2400 if args.vocab == "byte" else 800)
    args.pairs = args.pairs or (400 if args.vocab == "byte" else 96)
    args.max_new_tokens = args.max_new_tokens or (160 if args.vocab == "byte" else 64)
    os.chdir(REPO)  # the quickstart config's paths are relative to the repository
    with tempfile.TemporaryDirectory(prefix="bench-translation-") as tmp:
        workdir = Path(tmp)
        model_dir = args.model_dir or train_model(workdir, args)
        items = joined_pairs("validation", args.pairs, args.max_join, seed=0, vocab=args.vocab)
        write_pairs(workdir / "pairs.tsv", items, args.vocab)
        run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / "warm", args)  # fills the cache, warms the kernels
        lit, whole, unsorted, hf = [], [], [], []
        for n in range(args.repeats):  # interleaved, so a load that comes and goes hits every side
            lit.append(run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / f"lit{n}", args))
            whole.append(run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / f"whole{n}", args, drop=False))
            if not args.skip_unsorted:
                unsorted.append(
                    run_lit_hf(model_dir, workdir / "pairs.tsv", workdir / f"unsorted{n}", args, sort=False)
                )
            hf.append(run_hf(model_dir, items, workdir / f"hf{n}", args))
        report = summary(min(lit), min(hf), items, AutoTokenizer.from_pretrained(model_dir), args)
        report["lit_hf_whole_batches_sentences_per_s"] = round(len(items) / min(whole)[0], 1)  # drop_finished=false
        report["whole_batches_outputs_identical"] = min(whole)[1] == min(lit)[1]
        if unsorted:
            report["lit_hf_unsorted_sentences_per_s"] = round(len(items) / min(unsorted)[0], 1)  # what sorting saves
            report["unsorted_outputs_identical"] = min(unsorted)[1] == min(lit)[1]
        report["seconds_per_run"] = {
            name: [round(t, 1) for t, _ in runs]
            for name, runs in (("lit_hf", lit), ("whole", whole), ("unsorted", unsorted), ("hf", hf))
            if runs
        }
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
        "vocab": args.vocab,
        "vocab_size": len(tokenizer),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "pairs": len(items),
        "batch_size": args.batch_size,
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
        "mean_hypothesis_tokens": round(sum(token_counts) / len(token_counts), 1),
        "hypotheses_cut_at_max_new_tokens": args.cut_at_limit,  # no end token in Seq2SeqTrainer's outputs
        "bleu": round(sacrebleu.corpus_bleu(lit_texts, [[de for _, de in items]]).score, 2),
        "lit_hf_sentences_per_s": round(len(items) / lit_seconds, 1),
        "seq2seq_trainer_sentences_per_s": round(len(items) / hf_seconds, 1),
        "speedup": round(hf_seconds / lit_seconds, 2),
        "identical_outputs": lit_texts == hf_texts,
        "differing_outputs": sum(a != b for a, b in zip(lit_texts, hf_texts, strict=True)),
    }


if __name__ == "__main__":
    main()
