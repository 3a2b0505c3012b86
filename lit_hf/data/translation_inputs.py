"""Per-example transforms for translation: token ids of the pairs, batches with references, T5's task prefix."""

from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from lit_hf.errors import LitHFError

# Language names in T5's task prefixes ("translate English to German: "), from the T5 paper's WMT tasks,
# plus other WMT languages named the same way.
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "ro": "Romanian", "cs": "Czech", "fi": "Finnish",
    "ru": "Russian", "tr": "Turkish", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "nl": "Dutch",
    "et": "Estonian", "lv": "Latvian", "lt": "Lithuanian", "zh": "Chinese", "ja": "Japanese", "kk": "Kazakh",
}  # fmt: skip

# Tokenizers that need `src_lang`/`tgt_lang` to add the right language codes (as run_translation.py lists them).
MULTILINGUAL_TOKENIZERS = ("MBartTokenizer", "MBart50Tokenizer", "M2M100Tokenizer", "NllbTokenizer")

PAIR_COLUMN = "translation"  # rows like {"translation": {"en": ..., "ro": ...}}: WMT on the hub and its json dumps


def texts(batch: dict[str, list], column: str, lang: str) -> list[str]:
    """One side of the pairs: `batch[column][i][lang]` for the translation layout, else `batch[column][i]`."""
    values = batch[column]
    return [row[lang] for row in values] if column == PAIR_COLUMN else values


def tokenize_pairs(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    source: tuple[str, str],
    target: tuple[str, str] | None,
    prefix: str,
    max_source_length: int,
    max_target_length: int,
    pad_to_max_length: bool,
    ignore_pad_token_for_loss: bool,
) -> dict[str, list]:
    """Token ids of `prefix + source` and, when a target is given, of the target (`labels`) and its raw text."""
    padding = "max_length" if pad_to_max_length else False
    sources = [prefix + text for text in texts(batch, *source)]
    out = dict(tokenizer(sources, max_length=max_source_length, padding=padding, truncation=True, verbose=False))
    if target is not None:
        refs = texts(batch, *target)
        labels = tokenizer(text_target=refs, max_length=max_target_length, padding=padding, truncation=True)
        pad = tokenizer.pad_token_id
        ignore = pad_to_max_length and ignore_pad_token_for_loss  # -100 = ignored by the loss
        out["labels"] = [[-100 if ignore and t == pad else t for t in ids] for ids in labels["input_ids"]]
        out["target_text"] = refs  # BLEU is scored against the raw text, not decoded (truncated) labels
    return out


def collate_pairs(
    examples: list[dict[str, Any]], *, pad_token_id: int, label_pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """Pads to the longest in the batch, rounded up to `pad_to_multiple_of` (tensor cores under mixed precision).
    Adds `index` (position in the split) and `references` when known."""

    def pad(key: str, value: int) -> Tensor:  # (batch, longest)
        rows = [torch.as_tensor(ex[key], dtype=torch.long) for ex in examples]
        padded = pad_sequence(rows, batch_first=True, padding_value=value)
        extra = -padded.shape[1] % (pad_to_multiple_of or 1)
        return torch.nn.functional.pad(padded, (0, extra), value=value)

    batch = {"input_ids": pad("input_ids", pad_token_id), "attention_mask": pad("attention_mask", 0)}
    if "labels" in examples[0]:
        batch["labels"] = pad("labels", label_pad_token_id)
    batch["index"] = torch.tensor([int(ex["index"]) for ex in examples])
    if "target_text" in examples[0]:
        batch["references"] = [str(ex["target_text"]) for ex in examples]
    return batch


def t5_prefix(source_lang: str, target_lang: str) -> str:
    """T5's task prefix, e.g. "translate English to Romanian: "."""
    names = [LANGUAGE_NAMES.get(lang.split("_")[0]) for lang in (source_lang, target_lang)]
    if None in names:
        raise LitHFError(
            f"No T5 prefix is known for {source_lang}->{target_lang}; set --data.source_prefix "
            "(an empty string for none)."
        )
    return f"translate {names[0]} to {names[1]}: "


def set_language_codes(
    tokenizer: PreTrainedTokenizerBase, src_lang: str | None, tgt_lang: str | None
) -> PreTrainedTokenizerBase:
    """Multilingual tokenizers (mBART, M2M100, NLLB) add language codes, so they need both; others are unchanged."""
    if type(tokenizer).__name__.removesuffix("Fast") in MULTILINGUAL_TOKENIZERS:
        if not (src_lang and tgt_lang):
            raise LitHFError(
                f"{type(tokenizer).__name__} needs the language codes: set --data.src_lang and --data.tgt_lang "
                "(e.g. en_XX and ro_RO for mBART)."
            )
        tokenizer.src_lang, tokenizer.tgt_lang = src_lang, tgt_lang
    return tokenizer


def pair_columns(
    raw: Dataset, split: str, source_lang: str, target_lang: str, source_column: str | None, target_column: str | None
) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """(column, language) of the source and of the target (None: a predict split without targets)."""
    if PAIR_COLUMN in raw.column_names and not (source_column or target_column):
        keys = set(raw[0][PAIR_COLUMN] or {})
        for lang, option in ((source_lang, "source_lang"), (target_lang, "target_lang")):
            if lang not in keys and not (split == "predict" and option == "target_lang"):
                raise LitHFError(
                    f"The {split} split's translation pairs have no {lang!r} (they have: "
                    f"{', '.join(sorted(keys))}); set --data.{option}."
                )
        target = (PAIR_COLUMN, target_lang) if target_lang in keys else None
        return (PAIR_COLUMN, source_lang), target
    source = source_column or ("text" if "text" in raw.column_names and split == "predict" else source_lang)
    target = target_column or target_lang
    if source not in raw.column_names:
        raise LitHFError(
            f"The {split} split has no {PAIR_COLUMN!r} pairs and no source column {source!r} "
            f"(columns: {', '.join(raw.column_names)}); set --data.source_column."
        )
    if target not in raw.column_names:
        if split == "predict":
            return (source, source_lang), None
        raise LitHFError(
            f"The {split} split has no target column {target!r} (columns: {', '.join(raw.column_names)}); "
            "set --data.target_column."
        )
    return (source, source_lang), (target, target_lang)


def source_split(raw: DatasetDict, split: str) -> str:
    """The raw split that feeds `split`: `predict` reads the test split unless a predict_file was given."""
    return "test" if split == "predict" and "predict" not in raw else split


def raw_split(raw: DatasetDict, split: str) -> Dataset:
    """The raw split that feeds `split`; an absent or empty one is an error naming the option that gives it."""
    name = source_split(raw, split)
    if name not in raw:
        option = "predict_file" if split == "predict" else f"{split}_file"
        raise LitHFError(f"The data has no {name} split (it has: {', '.join(raw) or 'none'}); set --data.{option}.")
    if len(raw[name]) == 0:
        raise LitHFError(f"The {name} split is empty.")
    return raw[name]
