"""`train/loss` on 2 processes is the 1-process value for the same global batch, in every family (the task base logs
the mean over processes; rank 0's loss alone is half the batch's)."""

import json
from pathlib import Path

import pytest
from PIL import Image
from reference import logged
from runs import one_thread

from lit_hf.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart"
NO_DROPOUT = {
    "byte-gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    # wide initial weights too: at BERT's 0.02 all four endings of a story score alike, every example's loss is
    # log(4) and half the batch would have the whole batch's mean
    "byte-bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.5},
}
# A ViT instead of the quickstart's ResNet: BatchNorm normalizes each process's half batch by its own statistics.
VIT = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2}
VIT |= {"num_attention_heads": 2, "intermediate_size": 64, "hidden_dropout_prob": 0.0}


def no_dropout_config(folder: Path, model: str) -> Path:
    """The quickstart model's config.json with dropout off: processes draw other dropout masks than one process."""
    config = json.loads((QUICKSTART / model / "config.json").read_text()) | NO_DROPOUT[model]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def same_length_pairs(path: Path, kind: str) -> Path:
    """8 pairs whose targets have one length in bytes (tokens, for the byte-level T5), so each process's half of
    the batch holds as many target tokens as the other: the mean of the two token means is the batch's."""
    rows = [(f"Source {i}: " + "word " * i, f"target {i}{'abcdefgh'[i]}") for i in range(8)]
    if kind == "translation":
        path.write_text("en\tde\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
    else:
        path.write_text("".join(json.dumps({"document": s, "summary": t}) + "\n" for s, t in rows))
    return path


def uniform_images(root: Path) -> Path:
    """8 single-colour images in 2 class folders: random crops and flips of one colour are that colour, so the
    augmentation (each process draws its own) cannot tell the runs apart."""
    for i in range(8):
        folder = root / ("dark" if i % 2 else "light")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (30 * i, 255 - 30 * i, 100)).save(folder / f"{i}.png")
    return root


def family_args(family: str, tmp_path: Path) -> list[str]:
    """The family's quickstart config, dropout off, on 8 training examples."""
    if family in ("clm", "classification", "multiple_choice"):
        model = "byte-gpt2" if family == "clm" else "byte-bert"
        config = no_dropout_config(tmp_path / "config", model)
        return [f"--config={REPO}/configs/quickstart_{family}.yaml", f"--model.hub.config_name={config}"]
    if family in ("translation", "summarization"):  # byte-t5 has no dropout
        data = same_length_pairs(tmp_path / f"pairs.{'tsv' if family == 'translation' else 'jsonl'}", family)
        files = [f"--data.train_file={data}", f"--data.validation_file={data}"]
        return [f"--config={REPO}/configs/quickstart_{family}.yaml", *files]
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps(VIT))
    images = uniform_images(tmp_path / "images")
    files = [f"--data.train_dir={images}", f"--data.validation_dir={images}"]
    config = f"--model.hub.config_name={tmp_path / 'vit'}"
    return [f"--config={REPO}/configs/quickstart_image_classification.yaml", config, *files]


def fit(root: Path, cache: Path, *args: str) -> list[str]:
    return [
        "fit",
        *args,
        "--data.max_train_samples=8",
        f"--data.data_cache_dir={cache}",
        "--trainer.max_steps=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--save_pretrained.enabled=false",
        f"--trainer.default_root_dir={root}",
    ]


@pytest.mark.parametrize(
    "family", ["clm", "classification", "multiple_choice", "translation", "summarization", "image_classification"]
)
def test_train_loss_on_two_processes_is_the_one_process_value(family, tmp_path) -> None:
    args = family_args(family, tmp_path)
    # ddp_fork: Lightning's DDP with the processes forked from this one, which has imported everything already
    # (about 1 s here, against 10 s or more for `python -m lit_hf` processes that import torch and Lightning anew);
    # on one thread: forked children of a process with OpenMP's worker threads running hang (libgomp)
    two = ["--data.batch_size=4", "--trainer.devices=2", "--trainer.strategy=ddp_fork"]
    with one_thread():
        main(fit(tmp_path / "one", tmp_path / "cache", *args, "--data.batch_size=8"))
        main(fit(tmp_path / "two", tmp_path / "cache", *args, *two))
    one, two = logged(tmp_path / "one", "train/loss"), logged(tmp_path / "two", "train/loss")
    assert list(one) == list(two) == [0]
    assert two[0] == pytest.approx(one[0], rel=1e-5)
