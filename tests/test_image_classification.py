"""Image classification end to end: top-1/top-5 against numpy and sklearn, 1 vs 3 processes, the export's pipeline,
seeded augmentation, and one clear line for each user mistake."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from reference import REPO, read_results, run_lit_hf
from runs import cpu_run, family_args
from sklearn.metrics import top_k_accuracy_score
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ConvNextImageProcessorPil,
    ResNetConfig,
    pipeline,
)

from lit_hf.cli import main
from lit_hf.cli.lightning import LitHFCLI
from lit_hf.data.image_classification_inputs import ImageCollator, crop_box, output_size

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]  # 7: top-5 is not trivial


def noise_image(rng: np.random.Generator, label: int) -> Image.Image:
    """A random colour tinted by the class plus pixel noise, of varying size: the processor's resize and crop matter."""
    height, width = rng.integers(30, 48, size=2)
    base = rng.integers(0, 200, size=3) + np.array([label * 8, 0, -label * 8])
    pixels = base + rng.integers(0, 56, size=(height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_folders(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise_image(rng, label).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResNet with a 7-class head whose label order is not the data's (sorted folder names)."""
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    config.num_labels = len(CLASSES)
    config.id2label = dict(enumerate(reversed(CLASSES)))
    config.label2id = {name: i for i, name in config.id2label.items()}
    path = tmp_path_factory.mktemp("tiny-resnet")
    model = AutoModelForImageClassification.from_config(config)
    with torch.no_grad():  # a "fine-tuned" head: wide weights, so predictions differ between images
        model.classifier[1].weight.mul_(50)
    model.save_pretrained(path)
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875)  # resize to 36, crop 32
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_folders(root / "train", 4, seed=0)
    write_folders(root / "validation", 5, seed=1)  # 35 images: not a multiple of 3
    return root


def cli_args(tmp_path: Path, model_dir: Path, *extra: str) -> list[str]:
    run = cpu_run(tmp_path / "runs", tmp_path / "cache")
    return [*family_args("image_classification", model_dir), *run, "--trainer.enable_model_summary=false", *extra]


def new_run(tmp_path: Path, launch, command: str, model_dir: Path, *extra: str) -> Path:
    before = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*"))
    launch(command, *cli_args(tmp_path, model_dir, *extra))
    (new,) = set((tmp_path / "runs" / "lightning_logs").glob("*/version_*")) - before
    return new


def in_process(*args: str) -> None:
    main(list(args))


@torch.no_grad()
def reference_logits(model_dir: Path, images: list[Image.Image]) -> np.ndarray:
    """Independent of lit_hf: the checkpoint's processor and model, one image at a time, (n, classes) in the
    checkpoint's own label order."""
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    rows = [model(**processor(images=image.convert("RGB"), return_tensors="pt")).logits[0] for image in images]
    return torch.stack(rows).double().numpy()


def folder_images(root: Path) -> tuple[list[Image.Image], list[str]]:
    files = sorted(root.glob("*/*.png"))
    return [Image.open(f) for f in files], [f.parent.name for f in files]


def test_validate_on_three_processes_equals_one_and_sklearn(tmp_path, model_dir, folders):
    args = [f"--data.validation_dir={folders / 'validation'}", "--data.eval_batch_size=4"]
    one = read_results(new_run(tmp_path, in_process, "validate", model_dir, *args))
    ddp = ["--trainer.devices=3", "--trainer.strategy=ddp"]
    three = read_results(new_run(tmp_path, run_lit_hf, "validate", model_dir, *args, *ddp))
    assert set(one) == {"val/loss", "val/accuracy", "val/top5_accuracy"}
    for key in one:
        assert three[key] == pytest.approx(one[key], abs=1e-6), key
    images, names = folder_images(folders / "validation")
    logits = reference_logits(model_dir, images)
    own = AutoModelForImageClassification.from_pretrained(model_dir).config.label2id
    gold = np.array([own[name] for name in names])
    assert len(set(logits.argmax(1))) > 1  # the predictions vary, so the check means something
    assert one["val/accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == gold)), abs=1e-6)
    top5 = top_k_accuracy_score(gold, logits, k=5, labels=range(len(CLASSES)))
    assert 0 < top5 < 1 and one["val/top5_accuracy"] == pytest.approx(top5, abs=1e-6)
    loss = -torch.log_softmax(torch.from_numpy(logits), -1)[torch.arange(len(gold)), gold].mean()
    assert one["val/loss"] == pytest.approx(float(loss), abs=1e-5)


def saved_dataset(path: Path) -> Path:
    """A saved DatasetDict with other column names (`picture`, `kind` as text) and a test split in a known order."""
    rng = np.random.default_rng(2)
    features = Features({"picture": ImageFeature(), "kind": Value("string")})
    splits = {}
    for split, n in (("train", 28), ("validation", 14), ("test", 10)):
        labels = [int(i) % len(CLASSES) for i in rng.permutation(n)]
        rows = {"picture": [noise_image(rng, y) for y in labels], "kind": [CLASSES[y] for y in labels]}
        splits[split] = Dataset.from_dict(rows, features=features)
    DatasetDict(splits).save_to_disk(str(path))
    return path


def test_fit_export_and_pipeline_parity(tmp_path, model_dir):
    saved = saved_dataset(tmp_path / "saved")
    data = [f"--data.dataset_path={saved}", "--data.image_column_name=picture", "--data.label_column_name=kind"]
    fit = new_run(tmp_path, in_process, "fit", model_dir, *data, "--trainer.max_epochs=1", "--data.batch_size=7")
    export = fit / "huggingface"
    assert (export / "preprocessor_config.json").exists()
    assert 'pipe = pipeline("image-classification", model=PATH)' in (export / "README.md").read_text()
    predicted = new_run(tmp_path, in_process, "predict", export, *data, "--data.eval_batch_size=3")
    rows = [json.loads(line) for line in (predicted / "predict_results.jsonl").read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(10))
    classify = pipeline("image-classification", model=str(export), device="cpu")
    images = list(DatasetDict.load_from_disk(str(saved))["test"]["picture"])
    for row, expected in zip(rows, classify(images, top_k=len(CLASSES)), strict=True):
        assert row["prediction"] == expected[0]["label"]
        for guess in expected:
            assert row["probabilities"][guess["label"]] == pytest.approx(guess["score"], abs=1e-5)
    bare = pipeline("image-classification", model=str(export))(images[0])  # as a user types it, no options
    assert bare[0]["label"] == rows[0]["prediction"]


def test_training_with_augmentation_is_reproducible(tmp_path, model_dir, folders):
    args = [f"--data.train_dir={folders / 'train'}", f"--data.validation_dir={folders / 'validation'}"]
    args += ["--seed_everything=7", "--trainer.max_epochs=2", "--data.batch_size=8"]
    weights = []
    for _ in range(2):
        run = new_run(tmp_path, in_process, "fit", model_dir, *args)
        weights.append(AutoModelForImageClassification.from_pretrained(run / "huggingface").state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    original = AutoModelForImageClassification.from_pretrained(model_dir).state_dict()
    assert not torch.equal(weights[0]["classifier.1.weight"], original["classifier.1.weight"])  # it trained


def test_seeded_augmentation_is_reproducible_and_keeps_its_bounds(model_dir):
    processor = AutoImageProcessor.from_pretrained(model_dir)
    rows = [{"image": noise_image(np.random.default_rng(i), 0), "labels": i, "index": i} for i in range(6)]
    first, again, other = (ImageCollator(processor, seed=s)(rows) for s in (3, 3, 4))
    assert first["pixel_values"].shape == (6, 3, *output_size(processor)) == (6, 3, 32, 32)
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    assert first["labels"].tolist() == list(range(6))
    # An example's crop follows the seed, the epoch and its index only: not its batch or its place in it (so not
    # the loader workers, the processes or a resume), and it changes with the epoch.
    alone = ImageCollator(processor, seed=3)(rows[4:5])["pixel_values"][0]
    reversed_batch = ImageCollator(processor, seed=3)(rows[::-1])["pixel_values"]
    assert torch.equal(alone, first["pixel_values"][4]) and torch.equal(reversed_batch, first["pixel_values"].flip(0))
    collator = ImageCollator(processor, seed=3)
    collator.set_epoch(1)
    next_epoch = collator(rows)["pixel_values"]
    assert all(not torch.equal(next_epoch[i], first["pixel_values"][i]) for i in range(6))
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, right, bottom = crop_box(60, 40, generator, (0.08, 1.0), (3 / 4, 4 / 3))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 60 and 0 <= top < bottom <= 40
        assert 0.08 * 2400 - w - h <= w * h and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1  # up to rounding


def test_quickstart_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "quickstart_image_classification.yaml"
    cli = LitHFCLI(subclass_mode_model=True, subclass_mode_data=True, run=False, args=[f"--config={config}"])
    quickstart = REPO / "configs" / "quickstart"
    assert cli.datamodule.hparams.train_dir == str(quickstart / "shapes" / "train")
    assert cli.datamodule.model_name_or_path == str(quickstart / "resnet-tiny")  # its image processor, linked
    assert cli.model.label_names == ["circle", "cross", "square", "triangle"]
    assert cli.model.model.config.id2label == dict(enumerate(cli.model.label_names))


@pytest.mark.parametrize("case", ["unreadable_image", "empty_class_folder", "missing_column", "head_size"])
def test_errors_exit_with_one_line(tmp_path, model_dir, folders, capsys, case):
    if case == "unreadable_image":
        bad = write_folders(tmp_path / "bad", 2, seed=3)
        (bad / "cat" / "broken.png").write_bytes(b"not an image")
        args, message = [f"--data.validation_dir={bad}"], f"image {bad / 'cat' / 'broken.png'} could not be read"
    elif case == "empty_class_folder":
        empty = write_folders(tmp_path / "empty", 2, seed=3)
        (empty / "yak").mkdir()
        args, message = [f"--data.validation_dir={empty}"], f"class folder '{empty / 'yak'}' has no images"
    elif case == "missing_column":
        saved = saved_dataset(tmp_path / "saved")
        args, message = [f"--data.dataset_path={saved}", "--data.label_column_name=kind"], "no column 'image'"
    else:
        three = tmp_path / "three"
        for name in CLASSES[:3]:
            (three / name).mkdir(parents=True)
            noise_image(np.random.default_rng(0), 0).save(three / name / "0.png")
        args, message = [f"--data.validation_dir={three}"], "head has 7 outputs"
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *cli_args(tmp_path, model_dir, *args)])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit_hf: error:")]
    assert len(err) == 1 and message in err[0], err
