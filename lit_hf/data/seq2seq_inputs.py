"""Per-example transforms of the seq2seq family (translation, summarization): the source and target sides of a
batch as token ids, batches padded per batch with their references, T5's task prefixes, multilingual tokenizers."""

import copy
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from lit_hf.data.base import CUT, CUT_TARGET, tokenize_with_cut
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


Side = tuple[str, str | None]  # (column, key in a dict column such as WMT's `translation`, or None)


def texts(batch: dict[str, list], column: str, key: str | None) -> list[str]:
    """One side of a batch: `batch[column][i][key]` for the translation layout, else `batch[column][i]`."""
    values = batch[column]
    return [row[key] for row in values] if key is not None else values


def tokenize_pairs(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    source: Side,
    target: Side | None,
    prefix: str,
    max_source_length: int,
    max_target_length: int,
    pad_to_max_length: bool,
    ignore_pad_token_for_loss: bool,
) -> dict[str, list]:
    """Token ids of `prefix + source` and, when a target side is given, of the target (`labels`) and its raw text;
    `CUT` and `CUT_TARGET` say which sources and targets were cut.

    Every text is there (`values.check_texts` ran before); a predict split's missing targets become "": they are
    not scored.
    """
    padding = "max_length" if pad_to_max_length else False
    sources = [prefix + text for text in texts(batch, *source)]
    out, cut = tokenize_with_cut(tokenizer, max_source_length, True, padding, text=sources)
    out[CUT] = cut
    if target is not None:
        refs = [text or "" for text in texts(batch, *target)]
        labels, cut_targets = tokenize_with_cut(tokenizer, max_target_length, True, padding, text_target=refs)
        out[CUT_TARGET] = cut_targets
        pad = tokenizer.pad_token_id
        ignore = pad_to_max_length and ignore_pad_token_for_loss  # -100 = ignored by the loss
        out["labels"] = [[-100 if ignore and t == pad else t for t in ids] for ids in labels["input_ids"]]
        out["target_text"] = refs  # BLEU and ROUGE are scored against the raw text, not decoded (truncated) labels
    return out


def t5_prefix(source_lang: str, target_lang: str) -> str:
    """T5's task prefix, e.g. "translate English to Romanian: "."""
    names = [LANGUAGE_NAMES.get(lang.split("_")[0]) for lang in (source_lang, target_lang)]
    if None in names:
        raise LitHFError(
            f"No T5 prefix is known for {source_lang}->{target_lang}; set --data.source_prefix "
            "(an empty string for none)."
        )
    return f"translate {names[0]} to {names[1]}: "


def with_language_codes(
    tokenizer: PreTrainedTokenizerBase, src_lang: str | None, tgt_lang: str | None
) -> PreTrainedTokenizerBase:
    """Multilingual tokenizers (mBART, M2M100, NLLB) add language codes, so they need both: a copy with them set
    (the tokenizer itself is the task's too, and the same object for every component that loads it, so it is not
    changed); other tokenizers are returned as they are."""
    if type(tokenizer).__name__.removesuffix("Fast") not in MULTILINGUAL_TOKENIZERS:
        return tokenizer
    if not (src_lang and tgt_lang):
        raise LitHFError(
            f"{type(tokenizer).__name__} needs the language codes: set --data.src_lang and --data.tgt_lang "
            "(e.g. en_XX and ro_RO for mBART)."
        )
    coded = copy.deepcopy(tokenizer)
    coded.src_lang, coded.tgt_lang = src_lang, tgt_lang
    return coded


def pair_languages(raw: Dataset, wanted: set[str]) -> set[str]:
    """The languages of the `translation` dicts: their fields, or, where rows have different keys (`datasets` keeps
    such dicts as JSON), the keys of the rows read until every `wanted` one is seen (all rows if one never is)."""
    feature = raw.features[PAIR_COLUMN]
    if isinstance(feature, dict):
        return set(feature)
    keys: set[str] = set()
    for batch in raw.select_columns([PAIR_COLUMN]).iter(batch_size=1000):
        keys.update(key for pair in batch[PAIR_COLUMN] for key in pair or {})
        if wanted <= keys:
            break
    return keys


def pair_columns(
    raw: Dataset, split: str, source_lang: str, target_lang: str, source_column: str | None, target_column: str | None
) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """The source and target sides: (`translation`, language) in the translation layout, else (column, None);
    the target None for a predict split without targets."""
    if PAIR_COLUMN in raw.column_names and not (source_column or target_column):
        keys = pair_languages(raw, {source_lang, target_lang})
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
            return (source, None), None
        raise LitHFError(
            f"The {split} split has no target column {target!r} (columns: {', '.join(raw.column_names)}); "
            "set --data.target_column."
        )
    return (source, None), (target, None)


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
