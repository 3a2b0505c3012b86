"""What a data module offers its task, and what an exportable task holds: the two links between a family's files and
the rest of lit_hf (the CLI, the export), written down as Protocols instead of `getattr` and parameter-name guesses."""

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

from transformers import GenerationConfig, PreTrainedModel

from lit_hf.options import LoraOptions


@runtime_checkable
class DataForTask(Protocol):
    """Every lit_hf data module. Both methods read only the user's options and files (never a model), so the CLI can
    call them before the task is built."""

    def task_arguments(self) -> dict[str, Any]:
        """The task options this data decides, by dotted name: a classifier's `label_names` and `regression` (read
        from the label column of the training files), a seq2seq task's `generation.max_new_tokens` (the target
        length). The CLI sets each one the user left at its default; a name the chosen task does not take means
        the data module belongs to another family (one line)."""
        ...

    def export_params(self) -> dict[str, dict[str, str]]:
        """`task_specific_params` an export writes into config.json (seq2seq: the source prefix the model learned
        with, under its pipeline task); {} where the data adds nothing to the model's config."""
        ...


@runtime_checkable
class CalibrationData(Protocol):
    """A data module that gives a quantizer's calibration batches (`--model.quantization.calibration_batches`).
    The CLI links it to the task before the run, as it links the tokenizer: the task never reads the data module."""

    def calibrate_on(self, split: str) -> Callable[[int], Iterable[dict[str, Any]]]:
        """Makes `prepare_data` and `setup` read `split` too; returns, for K, this process's share of the split's
        first K batches (whole batches, each on one process, so that 1 and N processes see the same batches)."""
        ...


@runtime_checkable
class Exportable(Protocol):
    """A task the export can save as a Hugging Face folder."""

    pipeline_tag: ClassVar[str | None]
    """The model card's `pipeline_tag` (the hub's task name); None where the hub has none (multiple choice)."""
    model: PreTrainedModel
    """The transformers model (with LoRA: its PEFT wrapper)."""
    lora: LoraOptions | None
    """The adapter options the model was trained with (the export saves adapters or merges them)."""

    def preprocessors(self) -> list[Any]:
        """What is saved beside the weights for `from_pretrained` and `pipeline()`: the tokenizer, or the image
        processor. The same objects the data module used (the hub group is linked to both)."""
        ...

    def generation_config(self) -> GenerationConfig | None:
        """The generation settings of the run (limits included, so a bare `pipeline()` call stops), or None for a
        model that does not generate."""
        ...
