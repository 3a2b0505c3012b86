"""Data mistakes and faults, run as users run them (a shipped quickstart config, a bad file swapped in): each ends in
one `lit_hf: error: ...` line naming the file, row and field where there is one, exit status 2, no traceback, nothing
written (pre-existing files byte-identical, no new run folder, no cache entry). Valid layouts that were refused
work, and damaged caches are built again. Cases of test_errors.py are not repeated here."""

import errno
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from datasets import Dataset, DatasetDict, Image
from datasets.arrow_writer import ArrowWriter
from reference import REPO
from runs import run_dir

from lit_hf.cli import main
from lit_hf.data import ImageClassificationDataModule, TranslationDataModule
from lit_hf.errors import LitHFError

QUICKSTART = REPO / "configs" / "quickstart"
SHAPES = QUICKSTART / "shapes"
CLASSES = ["circle", "cross", "square", "triangle"]


def lines_of(path: Path, n: int) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:n])


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def image_tree(root: Path, group: str = "", per_class: int = 2, source: str = "train") -> Path:
    """`root/<group>/<class>/*.png`, copies of the quickstart shapes."""
    for name in CLASSES:
        (root / group / name).mkdir(parents=True)
        for image in sorted((SHAPES / source / name).glob("*.png"))[:per_class]:
            shutil.copy(image, root / group / name / image.name)
    return root


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad inputs of the matrix, and an earlier run's folder whose files must stay byte-identical."""
    root = tmp_path_factory.mktemp("data-errors")
    earlier = root / "runs" / "lightning_logs" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text('{"val/loss": 1.0}')
    reviews = lines_of(QUICKSTART / "reviews" / "validation.csv", 20)
    (root / "utf16le.csv").write_bytes(reviews.encode("utf-16-le"))  # no byte-order mark
    (root / "utf16le.txt").write_bytes(lines_of(QUICKSTART / "python-docs" / "validation.txt", 40).encode("utf-16-le"))
    pairs = [{"translation": {"en": "one cat", "de": "eine Katze"}}, {"translation": {"en": "two cats"}}]
    (root / "utf16bom.jsonl").write_bytes("".join(json.dumps(p) + "\n" for p in pairs[:1]).encode("utf-16"))
    jsonl(root / "no_target.jsonl", pairs)
    (root / "empty_target.csv").write_text("en,de\none cat,eine Katze\ntwo cats,\n")
    jsonl(root / "no_summary.jsonl", [{"document": "A long text.", "summary": "Short."}, {"document": "More text."}])
    stories = [json.loads(line) for line in lines_of(QUICKSTART / "story-endings" / "validation.jsonl", 3).splitlines()]
    jsonl(root / "null_ending.jsonl", [stories[0], stories[1], {**stories[2], "ending1": None}])
    jsonl(root / "letter_label.jsonl", [stories[0], {**stories[1], "label": "B"}])
    (root / "parse_error.csv").write_text('text,label\nfine,positive\n"never closed,negative\n')
    (root / "header_only.csv").write_text("text,label\n")
    (root / "null_label.csv").write_text("text,label\ngood film,positive\nbad film,\ndull,negative\n")
    (root / "number_text.csv").write_text("text,label\n1,positive\n2,negative\n")
    jsonl(root / "null_text.jsonl", [{"text": "some words"}, {"text": None}])
    (root / "glue" / "RTE").mkdir(parents=True)
    (root / "glue" / "RTE" / "dev.tsv").write_bytes("index\tsentence1\tsentence2\tlabel\n".encode("utf-16-le"))
    (root / "empty_dir").mkdir()
    for name in ("saved", "damaged"):  # one Dataset (a DatasetDict's folder `datasets` reads as Arrow files)
        Dataset.from_dict({"en": ["a"] * 50, "de": ["b"] * 50}).save_to_disk(str(root / name))
    (arrow,) = (root / "damaged").rglob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    image_tree(root / "unseen" / "train")
    image_tree(root / "unseen" / "val")
    shutil.copytree(root / "unseen" / "val" / "circle", root / "unseen" / "val" / "hexagon")
    mixed = image_tree(root / "mixed")
    (mixed / "circle" / "more").mkdir()
    shutil.copy(next((SHAPES / "train" / "circle").glob("*.png")), mixed / "circle" / "more" / "x.png")
    loose = image_tree(root / "loose")
    shutil.copy(next((SHAPES / "train" / "circle").glob("*.png")), loose / "x.png")
    return root


NO_FILES = ("--data.train_file=null", "--data.validation_file=null")  # the quickstart configs' own files


def validate(config: str, option: str, *needles: str, files: tuple[str, ...] = ()) -> tuple[str, list[str], list[str]]:
    """A case: `validate` of quickstart_<config>.yaml with `option` ("validation_file=x.csv") naming a file of `bad`
    as `--data.validation_file={root}/x.csv`, after `files`; the needles are what the error line must hold."""
    name, file = option.split("=")
    return config, ["validate", *files, f"--data.{name}={{root}}/{file}"], list(needles)


def source(config: str, option: str, *needles: str) -> tuple[str, list[str], list[str]]:
    """A case of `validate` whose data come from `option` alone (the quickstart's own files set to null)."""
    return validate(config, option, *needles, files=NO_FILES)


CASES = {
    "utf16le-csv-without-bom": validate("classification", "validation_file=utf16le.csv",
        "utf16le.csv", "is not UTF-8 text: line 1 holds NUL bytes", "iconv -f UTF-16LE"),
    "utf16le-text-without-bom": validate("clm", "validation_file=utf16le.txt", "utf16le.txt", "is not UTF-8 text"),
    "utf16-jsonl-with-bom": validate("translation", "validation_file=utf16bom.jsonl",
        "utf16bom.jsonl", "is UTF-16 (it starts with a byte-order mark), not UTF-8"),
    "utf16-glue-tsv": validate("classification", "data_dir=glue",
        "GLUE RTE validation file", "dev.tsv", "is not UTF-8 text", files=(*NO_FILES, "--data.task_name=rte")),
    "translation-row-without-target": validate("translation", "validation_file=no_target.jsonl",
        "validation_file", "no_target.jsonl', row 2: 'de' of 'translation' is missing"),
    "translation-empty-target-cell": validate("translation", "validation_file=empty_target.csv",
        "empty_target.csv', row 2: 'de' is missing"),
    "summarization-row-without-summary": validate("summarization", "validation_file=no_summary.jsonl",
        "no_summary.jsonl', row 2: 'summary' is missing"),
    "multiple-choice-null-ending": validate("multiple_choice", "validation_file=null_ending.jsonl",
        "null_ending.jsonl', row 3: 'ending1' is missing"),
    "multiple-choice-label-not-an-index": validate("multiple_choice", "validation_file=letter_label.jsonl",
        "letter_label.jsonl', row 2: label 'B' is not among the choice indices 0..3"),
    "csv-parse-error": validate("classification", "validation_file=parse_error.csv",
        "parse_error.csv' could not be read as csv: Error tokenizing data", "EOF inside string"),
    "csv-header-only": validate("classification", "validation_file=header_only.csv",
        "header_only.csv' could not be read as csv: it holds no rows"),
    "classification-missing-label": validate("classification", "train_file=null_label.csv",
        "train_file", "null_label.csv', row 2: 'label' is missing"),
    "classification-numbers-as-text": validate("classification", "validation_file=number_text.csv",
        "number_text.csv': 'text' holds int64 values, not text"),
    "language-model-null-text": validate("clm", "validation_file=null_text.jsonl",
        "null_text.jsonl', row 2: 'text' is missing"),
    "dataset-name-path-missing": source("translation", "dataset_name=nowhere",
        "dataset_name", "nowhere' is a local path that does not exist"),
    "dataset-name-is-a-file": source("translation", "dataset_name=no_target.jsonl",
        "no_target.jsonl' is a file; give it as --data.train_file"),
    "dataset-name-empty-folder": source("translation", "dataset_name=empty_dir",
        "empty_dir' could not be read", "doesn't contain any data files"),
    "dataset-name-saved-dataset": source("translation", "dataset_name=saved",
        "saved' was saved with `save_to_disk`; give it as --data.dataset_path"),
    "dataset-path-is-a-file": source("translation", "dataset_path=no_target.jsonl",
        "dataset_path", "no_target.jsonl' is a file"),
    "dataset-path-damaged": source("translation", "dataset_path=damaged",
        "dataset_path", "damaged' could not be read", "save it again"),
    "image-validation-class-not-in-training": validate("image_classification", "validation_dir=unseen/val",
        "validation split (in '", "has labels ['hexagon'] that are not among the training labels",
        files=("--data.train_dir={root}/unseen/train",)),
    "image-classes-at-two-depths": validate("image_classification", "validation_dir=mixed",
        "mixed' has images at different depths", "circle/more/x.png"),
    "image-outside-a-class-folder": validate("image_classification", "validation_dir=loose",
        "loose' has images directly in it (x.png)"),
    "image-data-dir-missing": validate("image_classification", "data_dir=nowhere",
        "data_dir", "nowhere' does not exist", files=("--data.train_dir=null", "--data.validation_dir=null")),
    "image-dir-is-a-file": validate("image_classification", "validation_dir=header_only.csv",
        "header_only.csv' is a file"),
}  # fmt: skip


def run_quickstart(config: str, args: list[str], root: Path) -> None:
    """`python -m lit_hf <subcommand> --config configs/quickstart_<config>.yaml <args>` in this process."""
    subcommand, *rest = args
    main([
        subcommand, f"--config={REPO / 'configs' / f'quickstart_{config}.yaml'}", *rest,
        f"--data.data_cache_dir={root / 'cache'}", f"--trainer.default_root_dir={root / 'runs'}",
        "--trainer.max_steps=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `root`, but for the `datasets` cache (conversions of good files)
    only lit_hf's own entries in it."""
    kept = [p for p in root.rglob("*") if p.relative_to(root).parts[0] != "cache" or "lit_hf" in p.parts[:-1]]
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(kept)}


def one_error_line(capsys: pytest.CaptureFixture, exit_info: pytest.ExceptionInfo) -> str:
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", CASES)
def test_data_mistake_is_one_line_and_writes_nothing(bad: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    config, args, needles = CASES[case]
    before = snapshot(bad)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_quickstart(config, [arg.format(root=bad) for arg in args], bad)
    line = one_error_line(capsys, exit_info)
    for needle in needles:
        assert needle.format(root=bad) in line, line
    assert snapshot(bad) == before


@pytest.mark.parametrize("deeper", ["validation", "train"])
@pytest.mark.parametrize("source", ["data_dir", "split_dirs"])
def test_class_folders_at_another_depth_per_split_are_read(tmp_path: Path, deeper: str, source: str) -> None:
    """`train/<class>/*.png` with `val/<group>/<class>/*.png` (or the other way) is a valid layout: `imagefolder` left
    to itself labels no split unless every image of every split lies at one depth ("no column 'label'" before). Each
    image's label must be its class folder's id among the sorted training classes."""
    root = tmp_path / "images"
    image_tree(root / "train", group="g" if deeper == "train" else "", per_class=2)
    image_tree(root / "val", group="g" if deeper == "validation" else "", per_class=3, source="validation")
    folders = {"data_dir": str(root)} if source == "data_dir" else {"train_dir": str(root / "train"),
                                                                   "validation_dir": str(root / "val")}  # fmt: skip
    data = ImageClassificationDataModule(str(QUICKSTART / "resnet-tiny"), data_cache_dir=str(tmp_path / "c"), **folders)
    assert data.label_names == CLASSES
    data.prepare_data()
    data.setup("validate")
    raw = data.load_raw()["validation"].cast_column("image", Image(decode=False))  # the files, in `index` order
    folders = [Path(raw[i]["image"]["path"]).parent.name for i in data.datasets["validation"]["index"]]
    assert sorted(folders) == sorted(CLASSES * 3)
    assert data.datasets["validation"]["labels"] == [CLASSES.index(folder) for folder in folders]


def test_translation_rows_with_differing_keys(tmp_path: Path) -> None:
    """Rows whose `translation` dicts have different keys (`datasets` keeps them as JSON text) are read row by row:
    with both languages in every row they are all tokenized; a row without the target is named."""
    rows = [{"translation": {"en": "one cat", "de": "eine Katze", "fr": "un chat"}},
            {"translation": {"en": "two cats", "de": "zwei Katzen"}}]  # fmt: skip
    for name, pairs in (("complete", rows), ("incomplete", [*rows, {"translation": {"en": "three cats"}}])):
        file = jsonl(tmp_path / f"{name}.jsonl", pairs)
        data = TranslationDataModule(
            model_name_or_path=str(QUICKSTART / "byte-t5"), source_lang="en", target_lang="de",
            validation_file=str(file), data_cache_dir=str(tmp_path / "c"),
        )  # fmt: skip
        if name == "incomplete":
            with pytest.raises(LitHFError, match=r"incomplete.jsonl', row 3: 'de' of 'translation' is missing"):
                data.prepare_data()
            continue
        data.prepare_data()
        data.setup("validate")
        assert data.datasets["validation"]["target_text"] == ["eine Katze", "zwei Katzen"]


def validation_results(root: Path) -> dict[str, float]:
    return json.loads((run_dir(root / "runs") / "results.json").read_text())


def test_damaged_caches_are_built_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated lit_hf cache file, a zeroed `datasets` conversion of the training file (read for the labels on
    every run) and a truncated `datasets` map result: the next run says so in a line each, builds them again and
    scores exactly as before; the run after that says nothing. Before, every rerun failed alike."""
    valid = tmp_path / "validation.csv"
    valid.write_text(lines_of(QUICKSTART / "reviews" / "validation.csv", 41))
    args = ["validate", f"--data.validation_file={valid}", "--seed_everything=0"]
    run_quickstart("classification", args, tmp_path)
    first = validation_results(tmp_path)
    (cached,) = (tmp_path / "cache" / "lit_hf").rglob("*.arrow")
    size = cached.stat().st_size
    cached.write_bytes(cached.read_bytes()[: size // 2])
    (conversion,) = (tmp_path / "cache").rglob("csv-train.arrow")
    conversion.write_bytes(b"\0" * conversion.stat().st_size)
    (tokenized,) = (tmp_path / "cache").rglob("cache-*-tokenize.arrow")
    tokenized.write_bytes(tokenized.read_bytes()[:100])
    caplog.clear()
    run_quickstart("classification", args, tmp_path)
    notices = [record.getMessage() for record in caplog.records if "is damaged" in record.getMessage()]
    assert len(notices) == 3, notices
    assert "the `datasets` cache of train_file" in notices[0] and "converting it again" in notices[0]
    assert "cached validation split" in notices[1] and "building it again" in notices[1]
    assert "step 'tokenize'" in notices[2]
    assert validation_results(tmp_path) == first and cached.stat().st_size == size
    caplog.clear()
    run_quickstart("classification", args, tmp_path)
    assert not [record for record in caplog.records if "is damaged" in record.getMessage()]
    assert validation_results(tmp_path) == first


def test_a_cache_cut_at_a_batch_boundary_is_found(tmp_path: Path) -> None:
    """Arrow reads a stream zeroed from a record batch's start as ended there: fewer rows, no error. The manifest
    saved with the cache (sizes and rows) finds it."""
    from lit_hf.data.cache import arrow_damage, cache_damage, save_atomically  # (here: the rest runs on old code)

    path = tmp_path / "entry"
    data = Dataset.from_dict({"ids": [[i] * 4 for i in range(2500)]})  # three record batches of up to 1000 rows
    save_atomically(DatasetDict({"train": data}), path, {"k": 1})
    assert cache_damage(path) is None
    (arrow,) = path.rglob("*.arrow")
    with pa.memory_map(str(arrow)) as source:
        reader = pa.ipc.MessageReader.open_stream(source)
        reader.read_next_message(), reader.read_next_message()  # the schema, the first batch
        cut = source.tell()
    content = arrow.read_bytes()
    arrow.write_bytes(content[:cut] + b"\0" * (len(content) - cut))
    assert arrow_damage(arrow) is None  # reads, as 1000 rows
    assert cache_damage(path) == f"{arrow.relative_to(path)} holds 1000 rows, not 2500"


@pytest.mark.parametrize("where", ["conversion", "cache"])
def test_a_full_disk_is_one_line_and_leaves_no_half_written_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """ENOSPC after some bytes were written, while `datasets` converts the file or while lit_hf saves its cache."""
    write = ArrowWriter.write_table

    def full_disk(self: ArrowWriter, *args: object, **kwargs: object) -> None:
        write(self, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "conversion":
        monkeypatch.setattr(ArrowWriter, "write_table", full_disk)
    else:
        save = DatasetDict.save_to_disk

        def save_on_full_disk(self: DatasetDict, path: str, **kwargs: object) -> None:
            with monkeypatch.context() as patch:
                patch.setattr(ArrowWriter, "write_table", full_disk)
                save(self, path, **kwargs)

        monkeypatch.setattr(DatasetDict, "save_to_disk", save_on_full_disk)
    valid = tmp_path / "validation.jsonl"
    valid.write_text(lines_of(QUICKSTART / "town-news" / "validation.jsonl", 5))
    with pytest.raises(SystemExit) as exit_info:
        run_quickstart("summarization", ["validate", f"--data.validation_file={valid}"], tmp_path)
    assert "no space left on the device; free some, or set --data.data_cache_dir" in one_error_line(capsys, exit_info)
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "cache").glob("lit_hf/*"))
