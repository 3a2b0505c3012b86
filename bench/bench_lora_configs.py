"""Peak memory of the LoRA configs against their full fine-tuning configs, at the configs' own batch and lengths.

    python bench/bench_lora_configs.py [--configs gpt2_wikitext_lora opt_wikitext_lora ...] [--steps 3]

The hub weights are not reachable here, so each model is built at its hub model's shape from the default
`*Config` (GPT2Config = gpt2 124M, OPTConfig = opt-125m, BertConfig = bert-base-uncased, T5Config = t5-small) with
random weights and paired with the real tokenizer from ../shared/data (or $LIT_HF_TEST_DATA; OPT gets the GPT-2
BPE files it shares). Then `python -m lit_hf fit --config configs/<name>.yaml` runs `--steps` optimizer steps on
the CPU with the config's precision, batch size and maximum lengths, the model and the data swapped for local ones
on the command line; the full fine-tuning run is the same command with `--model.lora=null`. The data is the worst
case: every GLUE pair and every translation source/target is longer than the config's limits, so every batch is
cut at them (WikiText blocks are always full). Peak RSS is the `fit` process's own (`os.wait4`; data loading in
the main process, `--data.num_workers=0`). CPU RSS includes about 0.6 GB of libraries and counts float32 master
weights as a GPU would, but not CUDA's workspace: read it as the host-side size of the job, not a GPU reading.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
CONFIGS = ("gpt2_wikitext_lora", "opt_wikitext_lora", "bert_glue_lora", "t5_wmt16_en_ro_lora")


def build_model(name: str, path: Path) -> None:
    """The hub model's architecture from its default config, random weights, the real tokenizer."""
    import transformers as tf

    if name.startswith(("gpt2", "opt")):
        tokenizer = tf.GPT2TokenizerFast.from_pretrained(DATA / "tokenizers" / "gpt2")
        model = tf.GPT2LMHeadModel(tf.GPT2Config()) if name.startswith("gpt2") else tf.OPTForCausalLM(tf.OPTConfig())
    elif name.startswith("bert"):
        tokenizer = tf.BertTokenizerFast.from_pretrained(DATA / "tokenizers" / "bert-base-uncased")
        model = tf.BertModel(tf.BertConfig())
    else:
        tokenizer = tf.T5TokenizerFast.from_pretrained(DATA / "tokenizers" / "t5-small")
        model = tf.T5ForConditionalGeneration(tf.T5Config())
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def worst_case_data(name: str, work: Path) -> list[str]:
    """Data options pointing at local files whose every example reaches the config's length limits."""
    if name.startswith(("gpt2", "opt")):
        text = DATA / "wikitext" / "wikitext-2" / "valid.txt"
        return ["--data.dataset_name=null", "--data.dataset_config_name=null", f"--data.train_file={text}"]
    if name.startswith("bert"):
        rows = (DATA / "glue" / "RTE" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:201]
        long = [r.split("\t") for r in rows]
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [f"{i}\t{' '.join([r[1]] * 4)}\t{' '.join([r[2]] * 8)}\t{r[3]}" for i, r in enumerate(long)]
        (work / "RTE").mkdir()
        for split in ("train", "dev"):
            (work / "RTE" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return ["--data.task_name=rte", f"--data.data_dir={work}"]
    pairs = (DATA / "wmt16" / "wmt_en_ro" / "train.json").read_text(encoding="utf-8").splitlines()
    import json

    texts = [json.loads(line)["translation"] for line in pairs]
    joined = {lang: " ".join(t[lang] for t in texts) for lang in ("en", "ro")}  # thousands of tokens each
    rows = "".join(json.dumps({"translation": joined}) + "\n" for _ in range(200))
    (work / "pairs.json").write_text(rows, encoding="utf-8")
    return ["--data.dataset_name=null", "--data.dataset_config_name=null", f"--data.train_file={work / 'pairs.json'}"]


def parameters(name: str, model_dir: Path) -> tuple[int, int]:
    """(trainable, total) of the task the config builds, counted on the task itself."""
    import importlib

    model = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())["model"]
    module, cls = model["class_path"].rsplit(".", 1)
    kwargs = {**model["init_args"], "model_name_or_path": str(model_dir)}
    if cls == "SequenceClassificationTask":
        kwargs["label_names"] = ["entailment", "not_entailment"]
    task = getattr(importlib.import_module(module), cls)(**kwargs)
    params = list(task.model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def peak_rss_gb(
    name: str, model_dir: Path, data: list[str], work: Path, steps: int, full: bool, batch_size: int
) -> float:
    command = [sys.executable, "-m", "lit_hf", "fit", f"--config={REPO / 'configs' / f'{name}.yaml'}"]
    command += [f"--model.model_name_or_path={model_dir}", *data, "--data.num_workers=0"]
    root = work / ("full" if full else "lora")
    command += [f"--data.data_cache_dir={work / 'cache'}", f"--trainer.default_root_dir={root}"]
    command += [f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu"]
    command += ["--trainer.devices=1", "--trainer.enable_progress_bar=false"]
    command += ["--model.lora=null"] if full else []
    command += [f"--data.batch_size={batch_size}"] if batch_size else []
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        sys.exit(f"{name} ({'full' if full else 'lora'}) failed:\n{stderr[-3000:]}")
    return usage.ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--batch-size", type=int, help="instead of the config's (GPT-2/OPT at 8 x 1024 need over 24 GB)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    print(f"{'config':22}{'trainable':>12}{'of':>14}{'LoRA peak RSS':>15}{'full peak RSS':>15}{'ratio':>7}")
    for name in args.configs:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            build_model(name, work / "model")
            data = worst_case_data(name, work)
            trainable, total = parameters(name, work / "model")
            lora = peak_rss_gb(name, work / "model", data, work, args.steps, False, args.batch_size)
            full = peak_rss_gb(name, work / "model", data, work, args.steps, True, args.batch_size)
        print(f"{name:22}{trainable:>12,}{total:>14,}{lora:>12.2f} GB{full:>12.2f} GB{lora / full:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
