"""Per-example transforms for translation: token ids of the pairs, batches with references, T5's task prefix."""

from datasets import Dataset
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
    """(column, language) of the source and of the target (None: a predict split without targets)."""
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
            return (source, source_lang), None
        raise LitHFError(
            f"The {split} split has no target column {target!r} (columns: {', '.join(raw.column_names)}); "
            "set --data.target_column."
        )
    return (source, source_lang), (target, target_lang)
