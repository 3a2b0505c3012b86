"""Image classification data: the hub, class folders or a saved dataset; images cached as-is, transformed per batch."""

import functools
from functools import partial
from typing import Any

import datasets
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader

from lit_hf.data import image_classification_inputs as image_inputs
from lit_hf.data.base import DataModule, running_stage
from lit_hf.data.cache import tree_identity
from lit_hf.data.image_classification_inputs import ImageCollator, class_folders, load_image_folders, split_folders
from lit_hf.data.sources import load_hub, load_saved, require_columns
from lit_hf.data.values import check_present
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.models import load_image_processor
from lit_hf.options import HubOptions
from lit_hf.paths import LocalPath, ModelPath

# The splits each entry point reads; `predict` labels the test split, as the classification family does.
SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("test",)}


class ImageClassificationDataModule(DataModule):
    """Batches of `pixel_values` (batch, 3, height, width), `labels` (class ids) and, for `predict`, `index`.

    Sources: a hub dataset (`uoft-cs/cifar10`, `beans`), folders with one subfolder per class (`train_dir`,
    `validation_dir`, `test_dir`, or `data_dir` in the `imagefolder` layout) or a dataset saved with `save_to_disk`.
    `prepare_data` (once per node) checks that every image decodes, encodes the labels and caches the images as they
    are; the pixels are made per batch: training crops at random (8-100 % of the area, then resized) and flips, with a
    generator seeded by the seed, the epoch and the example; evaluation runs the image processor (its resize and
    centre crop). `label_names` (ClassLabel names, the training split's class folder names, or its sorted label
    values) flows to the model through the CLI. A class folder is the folder an image lies in; each split's class
    folders sit at one depth (which may differ between splits: `train/<class>/` and `val/<group>/<class>/`).

    Args:
        model_name_or_path: The model the data is prepared for: its image processor, whose size, mean and std shape the
            pixels; `hub` may name others. Linked from `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
        dataset_name: Hub dataset id, e.g. `uoft-cs/cifar10` or `beans`.
        dataset_config_name: Hub dataset configuration.
        dataset_path: A dataset saved with `save_to_disk` (a DatasetDict, or one Dataset read as train).
        data_dir: A folder in the `imagefolder` layout: `train/`, `validation/` (or `val/`, `valid/`, `dev/`) and
            `test/` of class folders, or class folders directly (then all of it is train).
        train_dir: Training images, one subfolder per class.
        validation_dir: Validation images, one subfolder per class.
        test_dir: Test images (read by `test` and `predict`), one subfolder per class.
        image_column_name: Column with the images.
        label_column_name: Column with the labels (a ClassLabel, class names or numbers).
        train_val_split: Fraction of train held out (at random, seeded) as validation when there is no validation.
        max_train_samples: Keep only the first N training examples (debugging, quick runs).
        max_eval_samples: Keep only the first N validation examples.
        max_predict_samples: Keep only the first N test examples (read by `test` and `predict`).
        preprocessing_num_workers: Processes for reading every image once and for label encoding.
        overwrite_cache: Prepare again even when a cached result exists.
        data_cache_dir: Where datasets and the prepared cache go (default: the `datasets` cache).
        batch_size: Training examples per batch per process.
        eval_batch_size: Evaluation/prediction examples per batch per process (default: batch_size).
        num_workers: DataLoader worker processes (decoding and augmenting images is the slow part).
        seed: Seed of the train/validation split and of the augmentation (with the epoch and the example's index).
    """

    family = "image_classification"
    tokenized = False  # images are cached as they are

    def __init__(
        self,
        model_name_or_path: ModelPath | None = None,
        hub: HubOptions = HubOptions(),
        dataset_name: str | None = None,
        dataset_config_name: str | None = None,
        dataset_path: LocalPath | None = None,
        data_dir: LocalPath | None = None,
        train_dir: LocalPath | None = None,
        validation_dir: LocalPath | None = None,
        test_dir: LocalPath | None = None,
        image_column_name: str = "image",
        label_column_name: str = "label",
        train_val_split: float = 0.15,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        max_predict_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        overwrite_cache: bool = False,
        data_cache_dir: LocalPath | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(model_name_or_path, hub)
        given = [name for name in ("dataset_name", "dataset_path", "data_dir") if self.hparams[name]]
        given += ["train_dir/validation_dir/test_dir"] if self._dirs() else []
        if len(given) != 1:
            raise ConfigError(
                "Give one image source: dataset_name, dataset_path, data_dir or train_dir/validation_dir/test_dir"
                + (f" (got {', '.join(given)})." if given else ".")
            )
        if not 0 <= train_val_split < 1:
            raise ConfigError(f"train_val_split must be in [0, 1), got {train_val_split}.")

    @property
    def label_names(self) -> list[str]:
        """Class names in id order. Linked to the model by the CLI."""
        return self._labels()

    def task_arguments(self) -> dict[str, Any]:
        return {"label_names": self.label_names}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        for split in SPLITS.get(stage, ()):
            if split not in self.datasets:
                raise LitHFError(f"The {split} split was not prepared; run prepare_data first.")
            if stage in ("validate", "test") and "labels" not in self.datasets[split].column_names:
                raise LitHFError(f"The {split} split has no labels, so it cannot be scored; use `predict` for it.")

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"].select_columns(["image", "labels", "index"]))

    def val_dataloader(self) -> DataLoader:
        return self._scored_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._scored_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader("test")  # with `index`, for the prediction file

    @functools.cache  # noqa: B019 (the same held-out split for every caller)
    def load_raw(self) -> DatasetDict:
        """The source's splits; without a validation split, `train_val_split` of train held out as one."""
        hp, raw = self.hparams, self._load_source()
        if "validation" in raw or "train" not in raw or not hp.train_val_split:
            return raw
        held_out = raw["train"].train_test_split(test_size=hp.train_val_split, seed=hp.seed)  # as the HF example
        return DatasetDict({**raw, "train": held_out["train"], "validation": held_out["test"]})

    def build(self, raw: DatasetDict, split: str, tag: str) -> Dataset:
        """The split's images as they are (each checked to decode), its label ids and `index`."""
        hp = self.hparams
        if split not in raw:
            raise LitHFError(f"The data has no {split} split (it has: {', '.join(raw) or 'none'}).")
        data, image, label = raw[split], hp.image_column_name, hp.label_column_name
        labelled = label in data.column_names or split != "test"
        require_columns(data, split, {image: "image_column_name", label if labelled else None: "label_column_name"})
        if labelled:
            check_present(data, f"the {split} split", [(label, None)])
        image_inputs.check_images(data, image, split, hp.preprocessing_num_workers)
        if labelled:
            data = self._encode_labels(data, split, tag)
        data = data.select_columns([image] + (["labels"] if labelled else []))
        if image != "image":
            data = data.rename_column(image, "image")
        return data.add_column("index", list(range(len(data))))  # input order, for prediction files

    def cache_key(self, split: str) -> dict[str, Any]:
        hp = self.hparams
        split_options = [hp.train_val_split, hp.seed] if split in ("train", "validation") else None
        columns = [hp.image_column_name, hp.label_column_name]
        return {"source": self._source, "columns": columns, "labels": self.label_names, "split_options": split_options}

    def collate(self, split: str) -> ImageCollator:
        """Training crops by the seed, the epoch and `index`; evaluation runs the image processor."""
        return (
            ImageCollator(self.processor, seed=self.hparams.seed) if split == "train" else ImageCollator(self.processor)
        )

    @functools.cached_property
    def processor(self) -> Any:
        """The image processor of the linked model (the same object the task holds)."""
        name = self.hub.image_processor_name or self.model_name_or_path
        if not name:
            raise ConfigError("model_name_or_path is not set; the CLI links it from --model.model_name_or_path.")
        return load_image_processor(name, **self.hub.loading())

    def splits(self, stage: str | None = None) -> tuple[str, ...]:
        """The splits each entry point reads (`SPLITS`); a data module used on its own: those its source has."""
        stage = stage or running_stage(self.trainer)
        if stage in SPLITS:
            return SPLITS[stage]
        return tuple(split for split in ("train", "validation", "test") if split in self.load_raw())

    def limit(self, split: str) -> int | None:
        hp = self.hparams
        return {"train": hp.max_train_samples, "validation": hp.max_eval_samples}.get(split, hp.max_predict_samples)

    def _scored_loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        return self.eval_loader(
            split, dataset.select_columns([c for c in ("image", "labels") if c in dataset.column_names])
        )

    def _encode_labels(self, data: Dataset, split: str, tag: str) -> Dataset:
        column, names = self.hparams.label_column_name, self.label_names
        if unknown := sorted(set(image_inputs.present_label_names(data, column)) - set(names)):
            folders = self._folders().get(split)
            where = f" (in {', '.join(map(repr, folders))})" if folders else ""
            raise LitHFError(
                f"The {split} split{where} has labels {unknown[:5]} that are not among the training labels "
                f"({', '.join(names)}); remove those images, or add training images of them."
            )
        feature = data.features[column]
        own = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        table = {name: i for i, name in enumerate(names)}
        encode = partial(image_inputs.encode_labels, label_column=column, label_to_id=table, names=own)
        return self.map_batched(data, encode, tag, "labels", drop=False)

    @functools.cache  # noqa: B019 (one data module per run; the labels are read once)
    def _labels(self) -> list[str]:
        """The classes of the training data, as text classification takes them from its training file, so that no
        class gets an output that training never saw: the class folders of the first split there is (train, else
        validation, else test), else the first labelled split's labels (a `ClassLabel`'s names: the dataset's)."""
        if folders := self._folders():
            first = next(folders[split] for split in ("train", "validation", "test") if split in folders)
            return sorted({name for folder in first for name in class_folders(folder)})
        raw, column = self._load_source(), self.hparams.label_column_name
        for split in ("train", "validation", "test"):
            if split in raw and column in raw[split].column_names:
                check_present(raw[split], f"the {split} split", [(column, None)])
                return image_inputs.split_label_names(raw[split], column)
        first = next(iter(raw.values()))
        require_columns(first, next(iter(raw)), {column: "label_column_name"})
        return []

    def _dirs(self) -> dict[str, str]:
        hp = self.hparams
        dirs = {"train": hp.train_dir, "validation": hp.validation_dir, "test": hp.test_dir}
        return {split: folder for split, folder in dirs.items() if folder}

    def _folders(self) -> dict[str, list[str]]:
        """The class-folder trees of each split, for folder sources (none for the hub or a saved dataset)."""
        hp = self.hparams
        return split_folders(self._dirs(), hp.data_dir) if self._dirs() or hp.data_dir else {}

    @functools.cache  # noqa: B019 (read for the labels and again to build the splits: load once)
    def _load_source(self) -> DatasetDict:
        hp = self.hparams
        if folders := self._folders():
            return load_image_folders(folders, hp.data_cache_dir)
        if hp.dataset_path:
            return load_saved(hp.dataset_path)
        return load_hub(hp.dataset_name, hp.dataset_config_name, None, hp.data_cache_dir)

    @functools.cached_property
    def _source(self) -> list[Any]:
        """What the images come from, for the cache key: the folders' files, or the hub id."""
        hp = self.hparams
        folders = [hp.dataset_path, hp.data_dir, *self._dirs().values()]
        return [tree_identity(f) for f in folders if f] or ["hub", hp.dataset_name, hp.dataset_config_name]
