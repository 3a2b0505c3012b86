"""A quiet console: the notices of Lightning, transformers and datasets that say nothing about a lit_hf run are
silenced one by one, by their text, where they come from; every other warning still shows."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Logger -> texts of its messages that hold nothing to act on. Lightning's `rank_zero_info` lines (a logger that
# lit_hf's own lines share): the hardware lines repeat `--trainer.accelerator`, the seed is in config.yaml, the tip
# advertises a cloud service, and the step count is estimated for every fit. transformers' Python tokenizers warn for
# every text pair cut with `longest_first` that its overflowing tokens are not returned, which lit_hf never asks for
# (2,263 lines on RTE); lit_hf says once per split how many examples were cut (`lit_hf.data.base.report_cut`).
NOTICES = {
    "lightning.pytorch.utilities.rank_zero": (
        "GPU available:",
        "TPU available:",
        "HPU available:",
        "💡 Tip: For seamless cloud logging",
        "Loading `train_dataloader` to estimate number of stepping batches",
        "Trainer already configured with model summary callbacks",  # lit_hf's one-line summary (lit_hf/callbacks.py)
    ),
    "lightning.fabric.utilities.seed": ("Seed set to",),
    "transformers.tokenization_python": ("Be aware, overflowing tokens are not returned",),
}

# What importing torchao 0.18 logs on a machine without its CUDA kernels (transformers imports it whenever it is
# installed, quantization or not): one line per kernel library it cannot load, and torch's notice about its enums
# (its message starts with the enum's name). Dropped from `import lit_hf` on (`quiet_imports`), before anything
# imports transformers, for users of the library too.
IMPORT_NOTICES = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
}

# Warnings (message regexes) that do not apply to lit_hf, each with the reason it is wrong here.
NOT_APPLICABLE = (
    # lit_hf's evaluation metrics are torchmetrics states reduced exactly over processes before they are logged
    # (lit_hf/metrics.py); `sync_dist=True` would average already-equal values and could round them.
    r"It is recommended to use `self\.log\('(val|test)/",
    # validate/test/predict load a checkpoint's callbacks; the checkpoint callback's folder is this run's by design.
    r"The dirpath has changed from",
    # lit_hf's predict steps write their predictions to files as they go (lit_hf/predictions.py) and return None.
    r"predict returned None",
    # Lightning 2.6's own use of a torch API torch deprecated; nothing a user can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class DropNotices(logging.Filter):
    """Drops log records whose message holds one of `texts`."""

    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def drop_notices(notices: dict[str, tuple[str, ...]]) -> None:
    """A `DropNotices` filter on each logger, once per process and logger."""
    for name, texts in notices.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) and f.texts == texts for f in logger.filters):
            logger.addFilter(DropNotices(texts))


def quiet_imports() -> None:
    """Silences `IMPORT_NOTICES`; every other message of those loggers still shows. Imports nothing heavy."""
    drop_notices(IMPORT_NOTICES)


def quiet() -> None:
    """Silences the notices and warnings above, for a command (once per process). Imports nothing heavy."""
    drop_notices(IMPORT_NOTICES | NOTICES)
    for message in NOT_APPLICABLE:
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def datasets_bars(show: bool) -> Iterator[None]:
    """`datasets`' own progress bars (split generation, map, save) on or off inside the block, as they were after;
    huggingface_hub's download bars are not these and stay."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if show else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_on else datasets.disable_progress_bars)()


@contextmanager
def no_save_bar() -> Iterator[None]:
    """Without transformers' "Writing model shards" bar, which `save_pretrained` shows even for one shard written in a
    blink; the export's own line says where the model went."""
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()
