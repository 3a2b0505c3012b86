"""A task as a Hugging Face directory that `from_pretrained` and `transformers.pipeline()` load: safetensors weights,
labels, tokenizer, generation config and a model card, written to a temporary folder and renamed into place."""

import json
import os
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_hf.adapters import exportable_model
from lit_hf.atomic import replaced
from lit_hf.checks import incomplete_message
from lit_hf.console import no_save_bar
from lit_hf.contracts import DataForTask, Exportable
from lit_hf.errors import LitHFError
from lit_hf.trust import check_sharded_checkpoint

# How the model card says to load it: transformers 5 has no translation, summarization or text2text-generation
# pipeline. SOURCE: the text to translate or summarize, with the prefix the model was trained with (if any).
GENERATE = [
    "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
    "",
    "tokenizer, model = AutoTokenizer.from_pretrained(PATH), AutoModelForSeq2SeqLM.from_pretrained(PATH)",
    'print(tokenizer.decode(model.generate(**tokenizer(SOURCE, return_tensors="pt"))[0], skip_special_tokens=True))',
]
PIPELINES = ("text-classification", "text-generation", "image-classification")
USAGE = {tag: ["from transformers import pipeline", "", f'pipe = pipeline("{tag}", model=PATH)'] for tag in PIPELINES}
USAGE |= {"translation": GENERATE, "summarization": GENERATE}
# Multiple choice, which has neither a hub pipeline tag nor a pipeline: each choice is the second text of a pair after
# the context, as the data module encodes SWAG's `sent1` and `sent2 + " " + ending`; the model scores them together.
USAGE[None] = [
    "from transformers import AutoModelForMultipleChoice, AutoTokenizer",
    "",
    "tokenizer, model = AutoTokenizer.from_pretrained(PATH), AutoModelForMultipleChoice.from_pretrained(PATH)",
    'context, choices = "Jack got a puppy.", ["Jack was glad all day.", "Jack felt upset about it."]',
    'pairs = tokenizer([context] * len(choices), choices, padding=True, return_tensors="pt")',
    "scores = model(**{name: tensor[None] for name, tensor in pairs.items()}).logits[0]  # (choices,)",
    "print(choices[int(scores.argmax())])",
]
MARKER = "lit_hf_export.json"  # in every export: what it wrote (export_refusal)


def check_exportable(task: L.LightningModule) -> Exportable:
    """`task` as the export reads it, or one line saying why it cannot be exported."""
    if not isinstance(task, Exportable):
        raise LitHFError(
            f"{type(task).__name__} cannot be exported: the export needs a lit_hf task (lit_hf.contracts.Exportable: "
            "model, lora, pipeline_tag, preprocessors(), generation_config())."
        )
    return task


def export_pretrained(
    task: L.LightningModule,
    weights: dict[str, torch.Tensor],
    target: Path,
    card: str | None = None,
    task_params: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Saves `task.model` with `weights` (its own state dict keys), the task's preprocessors (tokenizer or image
    processor), its generation config, `task_params` (`data_task_params`) in its config and `card` as README.md into
    a temporary folder beside `target`, then renames it into place: a kill midway leaves the old export (or none),
    never a half-written one."""
    task = check_exportable(task)
    model = task.model
    current = getattr(model.config, "task_specific_params", None)  # transformers 5: only where a config has them
    if (params := with_task_params(current, task_params or {})) is not current:
        model.config.task_specific_params = params
    with replaced(Path(target)) as tmp:  # a kill midway leaves no folder under the real name (lit_hf/atomic.py)
        export = exportable_model(model, task.lora)  # with LoRA its adapters, or a merged copy (adapters.py)
        # safetensors; config.json with id2label/label2id/problem_type
        with no_save_bar():
            export.save_pretrained(tmp, state_dict=weights if export is model else None)
        for preprocessor in task.preprocessors():  # the ones the data module used (linked)
            preprocessor.save_pretrained(tmp)
        if (generation := task.generation_config()) is not None:
            generation.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        write_marker(tmp)
        same_mode(tmp, tmp / MARKER)
    return Path(target)


def same_mode(folder: Path, reference: Path) -> None:
    """Gives every file in `folder` the mode of `reference` (a file this process wrote: 0644 under umask 022):
    safetensors writes the weights 0600, which another user serving the export could not read."""
    mode = reference.stat().st_mode & 0o777
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def write_marker(folder: Path) -> None:
    """`lit_hf_export.json`: the files this export wrote, so that a later export replaces only these."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    marker = {"written_by": "lit_hf export", "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def check_export_target(target: Path, overwrite: bool, option: str, overwrite_option: str) -> None:
    """Raises what `export_refusal` finds (`option` names the folder, `overwrite_option` the way to replace it)."""
    if (problem := export_refusal(target, overwrite, option, overwrite_option, in_run=False)) is not None:
        raise LitHFError(problem)


def export_refusal(target: Path, overwrite: bool, option: str, overwrite_option: str, in_run: bool) -> str | None:
    """Why the export may not go to `target`, or None. An export replaces what is there, so it goes only to a new
    or empty folder, or over an earlier lit_hf export that holds nothing else when the user says `overwrite`; never
    into, onto or above a run folder that holds checkpoints (`in_run`: the fit-end export's own place in its run)."""
    name = f"{option} {str(target)!r}"
    if os.path.lexists(target) and not target.is_dir():
        return f"{name} is a file, not a folder; give the name of a new folder."
    if not in_run and (found := run_folder(target)) is not None:
        folder, checkpoint = found
        if folder == target.resolve():
            return f"{name} holds checkpoints ({checkpoint.relative_to(folder)}); give a new folder outside the run."
        return f"{name} is inside the run folder {str(folder)!r}, which holds checkpoints; give a folder outside it."
    if not target.is_dir() or not any(target.iterdir()):
        return None
    written = export_files(target)
    others = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p not in (written or ()))
    if written is None or others:
        what = "files that are not a lit_hf export" if written is None else "files besides a lit_hf export"
        return f"{name} holds {what} ({', '.join((others or [MARKER])[:3])}); give a new or empty folder."
    if not overwrite:
        return f"{name} holds an earlier lit_hf export; give {overwrite_option}=true to replace it, or a new folder."
    return None


def export_files(folder: Path) -> set[Path] | None:
    """The files an earlier export in `folder` wrote (its marker among them), or None if it holds no export."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return {folder / MARKER, *(folder / name for name in marker["files"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_folder(path: Path) -> tuple[Path, Path] | None:
    """The run folder that `path` is or lies in (one holding `checkpoints/*.ckpt`, Lightning's layout; `path` itself
    also when it holds `*.ckpt`), and a checkpoint in it. A folder beside a checkpoint file is not inside a run."""
    path = path.resolve()
    for folder in (path, *path.parents):
        patterns = ("*.ckpt", "checkpoints/*.ckpt") if folder == path else ("checkpoints/*.ckpt",)
        found = next((p for pattern in patterns for p in folder.glob(pattern)), None)
        if found is not None:
            return folder, found
    return None


def data_task_params(datamodule: L.LightningDataModule | None) -> dict[str, dict[str, str]]:
    """The data module's entries for the config's `task_specific_params` (seq2seq: the source prefix); none without
    a lit_hf data module."""
    return datamodule.export_params() if isinstance(datamodule, DataForTask) else {}


def with_task_params(current: dict[str, Any] | None, params: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    """`current` (a pretrained T5's: a prefix per task) with the prefix this run trained with. An empty prefix is
    written only over an entry that names another one: a config-built model gets no empty entries."""
    out = dict(current or {})
    for key, entry in params.items():
        if entry.get("prefix") or key in out:
            out[key] = {**out.get(key, {}), **entry}
    return out or current


def source_example(task_params: dict[str, dict[str, str]]) -> str:
    """The card's SOURCE: a placeholder text after the prefix of the run's task (`task_params` has one entry)."""
    prefix = next(iter(task_params.values()), {}).get("prefix", "")
    return repr(prefix + "...")


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint on the CPU: a `.ckpt` file, or a sharded (FSDP, `torch.distributed.checkpoint`) folder
    consolidated into full tensors; tensors and plain values only unless `weights_only` is false."""
    path = Path(path)
    if not path.exists():
        raise LitHFError(f"--ckpt_path {str(path)!r} does not exist.")
    try:
        if path.is_dir():
            if weights_only:
                check_sharded_checkpoint(path)  # torch unpickles a sharded folder's metadata in full
            # Lightning's own consolidation (what `python -m lightning.pytorch.utilities.consolidate_checkpoint` runs)
            from lightning.fabric.utilities.load import _load_distributed_checkpoint
            from lightning.pytorch.utilities.consolidate_checkpoint import _format_checkpoint

            return _format_checkpoint(_load_distributed_checkpoint(path))
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, KeyError, pickle.UnpicklingError) as err:
        raise LitHFError(incomplete_message(str(path), err)) from err


def model_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hugging Face model's part of a task's state dict (the task holds it as `model`)."""
    return {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}


def model_card(
    task: L.LightningModule,
    metrics: dict[str, Any],
    config_yaml: Path | None,
    source: str,
    task_params: dict[str, dict[str, str]] | None = None,
) -> str:
    """README.md: what it is, how to load it (with the source prefix of `task_params`), the run's final metrics and
    the command (config) that trained it."""
    tag = check_exportable(task).pipeline_tag
    lines = ["---", "library_name: transformers", *([f"pipeline_tag: {tag}"] if tag else []), "tags: [lit_hf]", "---"]
    lines += [f"# {task.model.config.model_type} fine-tuned with lit_hf", "", f"Exported from `{source}`.", ""]
    usage = [line.replace("SOURCE", source_example(task_params or {})) for line in USAGE.get(tag, [])]
    lines += ["```python", *usage, "```"] if usage else []
    numbers = {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        lines += ["", "## Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.6g} |" for name, value in numbers.items()]
    if config_yaml is not None and config_yaml.is_file():
        lines += ["", "## Training", "", "```", "python -m lit_hf fit --config config.yaml", "```", "", "config.yaml:"]
        lines += ["", "```yaml", config_yaml.read_text(encoding="utf-8").rstrip(), "```"]
    return "\n".join(lines) + "\n"


def run_files(ckpt_path: Path) -> tuple[dict[str, Any], Path | None]:
    """The metrics (`results.json`) and `config.yaml` of the run whose log dir holds `checkpoints/<ckpt>`."""
    folder = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    results = folder / "results.json"
    metrics = json.loads(results.read_text()) if results.is_file() else {}
    return metrics, (folder / "config.yaml") if (folder / "config.yaml").is_file() else None
