"""Image classification inputs: class folders, reading checks, label ids, augmentation and the batch collator.

torchvision is not used: its PyPI wheels for torch 2.13 are CUDA builds that do not load beside the CPU torch, so
the two augmentations `run_image_classification.py` takes from it (random resized crop, horizontal flip) are written
here with Pillow and torch, following torchvision's sampling rule.
"""

import io
import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as ImageFeature
from datasets.packaged_modules.imagefolder.imagefolder import IMAGE_EXTENSIONS
from PIL import Image
from torch import Tensor
from transformers import BaseImageProcessor

from lit_hf.errors import NO_SPACE_WAY_OUT, LitHFError, first_line, no_space

# The folders of data_dir that hold a split, by the names `datasets` gives them (`datasets.data_files.SPLIT_KEYWORDS`).
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
IMAGE_ENDINGS = frozenset(IMAGE_EXTENSIONS)  # what `imagefolder` reads as images; other files are passed over


def split_folders(dirs: dict[str, str], data_dir: str | None) -> dict[str, list[str]]:
    """The class-folder trees of each split: the given train/validation/test dirs, else data_dir's split folders
    (`train/`, `val/`, ...), else data_dir itself as train."""
    if not data_dir:
        return {split: [folder] for split, folder in dirs.items()}
    if not os.path.isdir(data_dir):
        raise LitHFError(
            f"data_dir {data_dir!r} " + ("is a file; give a folder." if os.path.exists(data_dir) else "does not exist.")
        )
    found = {
        split: [os.path.join(data_dir, name) for name in names if os.path.isdir(os.path.join(data_dir, name))]
        for split, names in SPLIT_FOLDERS.items()
    }
    return {split: folders for split, folders in found.items() if folders} or {"train": [data_dir]}


def class_folders(folder: str) -> list[str]:
    """The classes of one split's tree: the names of the folders that hold its images (each image's own folder, as
    `imagefolder` labels it with `drop_labels=False`), sorted. The images must all lie at one depth below `folder`
    (`<class>/x.png`, or `<group>/<class>/x.png`), not in it directly, and every folder at the class level must
    hold images; anything else is an error naming an example."""
    images = folder_images(folder)
    depths = {len(path.parts) for path in images}
    if min(depths) == 1:
        example = next(p for p in images if len(p.parts) == 1)
        raise LitHFError(
            f"The image folder {folder!r} has images directly in it ({example}); put each class's images in a "
            "subfolder named after the class."
        )
    if len(depths) > 1:
        shallow, deep = (next(p for p in images if len(p.parts) == d) for d in (min(depths), max(depths)))
        raise LitHFError(
            f"The image folder {folder!r} has images at different depths ({shallow} and {deep}); put each class's "
            "images in a folder named after the class, all class folders at one level."
        )
    classes = {path.parent for path in images}
    level = next(iter(depths)) - 1
    for candidate in sorted(Path(folder).glob("/".join(["*"] * level))):
        relative = candidate.relative_to(folder)
        if candidate.is_dir() and not hidden(relative) and relative not in classes:
            raise LitHFError(f"The class folder {str(candidate)!r} has no images; add some or remove it.")
    return sorted({path.name for path in classes})


def folder_images(folder: str) -> list[Path]:
    """The image files under `folder`, relative to it, skipping hidden and `__` paths as `datasets` does."""
    if not os.path.isdir(folder):
        what = "is a file; give a folder of class folders." if os.path.exists(folder) else "does not exist."
        raise LitHFError(f"The image folder {folder!r} {what}")
    images = sorted(
        path.relative_to(folder)
        for path in Path(folder).rglob("*")
        if path.suffix.lower() in IMAGE_ENDINGS and not hidden(path.relative_to(folder)) and path.is_file()
    )
    if not images:
        raise LitHFError(f"The image folder {folder!r} has no images; put each class's images in its own subfolder.")
    return images


def hidden(relative: Path) -> bool:
    return any(part.startswith((".", "__")) for part in relative.parts)


def load_image_folders(folders: dict[str, list[str]], cache_dir: str | None) -> DatasetDict:
    """One `imagefolder` split per entry of `folders`, labelled by each image's folder (`drop_labels=False`: left
    to infer, `imagefolder` labels only when every image of every split lies at one depth, so a validation tree one
    level deeper than train's came without labels), each tree checked by `class_folders` first."""
    for trees in folders.values():
        for folder in trees:
            class_folders(folder)
    files = {split: [os.path.join(folder, "**") for folder in trees] for split, trees in folders.items()}
    try:
        return datasets.load_dataset("imagefolder", data_files=files, drop_labels=False, cache_dir=cache_dir)
    except Exception as err:  # the builder raises many types for one cause: the folder does not read as images
        if no_space(err):
            raise LitHFError(f"Reading the image folders: {NO_SPACE_WAY_OUT}") from err
        raise LitHFError(f"The image folders could not be read as `imagefolder`: {first_line(err)}") from err


def open_image(value: dict[str, Any]) -> Image.Image:
    """An undecoded `datasets` image (`{"bytes", "path"}`) as a fully read RGB image."""
    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    with Image.open(source) as image:
        return image.convert("RGB")  # convert() reads every pixel: a truncated file fails here, not in training


def check_images(dataset: Dataset, column: str, split: str, num_proc: int | None) -> None:
    """Every image of the split must decode (in `num_proc` processes); the first that does not is an error naming
    its file. Nothing is written: the check returns no columns."""
    undecoded = dataset.select_columns([column]).cast_column(column, ImageFeature(decode=False))
    check = partial(check_image_batch, column=column, split=split)
    undecoded.map(check, batched=True, num_proc=num_proc, desc=f"Check images {split}")


def check_image_batch(batch: dict[str, list], *, column: str, split: str) -> None:
    for value in batch[column]:
        try:
            open_image(value)
        except Exception as err:  # Pillow raises several types (UnidentifiedImageError, OSError, SyntaxError)
            name = value.get("path") or "an embedded image"
            raise LitHFError(f"The {split} split's image {name} could not be read: {first_line(err)}") from None


def split_label_names(dataset: Dataset, column: str) -> list[str]:
    """The class names of a split: a `ClassLabel` column's names, else its sorted distinct values as text."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return sorted(str(v) for v in dataset.unique(column))


def present_label_names(dataset: Dataset, column: str) -> list[str]:
    """The class names the split's rows have (a `ClassLabel` names more: those of every split, or of the dataset)."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return [feature.names[i] for i in sorted(dataset.unique(column))]
    return sorted(str(v) for v in dataset.unique(column))


def encode_labels(
    batch: dict[str, list], *, label_column: str, label_to_id: dict[str, int], names: list[str] | None
) -> dict[str, list]:
    """Class ids in the data module's label order; `names` reads a `ClassLabel` column's ids as names first."""
    values = [names[v] if names is not None else str(v) for v in batch[label_column]]
    return {"labels": [label_to_id[v] for v in values]}


def output_size(processor: BaseImageProcessor) -> tuple[int, int]:
    """(height, width) of the processor's output, as `run_image_classification.py` reads it from `size`."""
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    size = dict(size)
    if "shortest_edge" in size:
        return size["shortest_edge"], size["shortest_edge"]
    return size["height"], size["width"]


def crop_box(
    width: int, height: int, generator: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (left, top, right, bottom): a random area fraction in `scale` and aspect
    ratio in `ratio` (log-uniform), ten tries, else the largest centred box within the ratio bounds."""
    area, log_ratio = width * height, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, left + w, top + h
    w, h = width, height
    if width / height < ratio[0]:
        h = round(w / ratio[0])
    elif width / height > ratio[1]:
        w = round(h * ratio[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def augment(image: Image.Image, size: tuple[int, int], generator: torch.Generator) -> Image.Image:
    """Random resized crop (area 8-100 %, aspect 3/4-4/3, bilinear) to `size`, then a horizontal flip half the time."""
    box = crop_box(image.width, image.height, generator, (0.08, 1.0), (3 / 4, 4 / 3))
    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    if torch.rand(1, generator=generator).item() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def normalize(images: list[Image.Image], processor: BaseImageProcessor) -> Tensor:
    """(batch, 3, height, width) floats: rescaled and normalized with the processor's factor, mean and std."""
    pixels = np.stack([np.asarray(image, dtype=np.float32) for image in images])  # (batch, height, width, 3)
    if getattr(processor, "do_rescale", True):
        pixels = pixels * np.float32(processor.rescale_factor)
    if getattr(processor, "do_normalize", False):
        pixels = (pixels - np.float32(processor.image_mean)) / np.float32(processor.image_std)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


class ImageCollator:
    """Rows `{"image", "labels"?, "index"?}` -> `{"pixel_values", "labels", "index"}`.

    Training (`seed` given) augments each image with its own generator, seeded by the seed, the epoch (`set_epoch`,
    which the training loader calls before each epoch) and the row's `index`: an example's crop depends on nothing
    else, so not on the batch, the loader workers, the number of processes or where a fit was resumed. Evaluation
    runs the image processor itself (its resize and centre crop), exactly as `pipeline("image-classification")`
    does on the exported model.
    """

    def __init__(self, processor: BaseImageProcessor, seed: int | None = None) -> None:
        self.processor, self.seed, self.epoch = processor, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        images = [row["image"].convert("RGB") for row in rows]
        if self.seed is None:
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        else:
            size = output_size(self.processor)
            generators = [self._generator(row["index"]) for row in rows]
            crops = [augment(image, size, gen) for image, gen in zip(images, generators, strict=True)]
            pixels = normalize(crops, self.processor)
        batch = {"pixel_values": pixels}
        for key in ("labels", "index"):
            if key in rows[0]:
                batch[key] = torch.tensor([row[key] for row in rows])
        return batch

    def _generator(self, index: int) -> torch.Generator:
        """The stream of one example in this epoch. numpy's SeedSequence mixes the three numbers, so neighbouring
        indices or epochs get unrelated streams."""
        words = np.random.SeedSequence([self.seed % (1 << 64), self.epoch, index]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
