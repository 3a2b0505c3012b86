"""The skeleton every task family shares: load the model, wrap adapters, shard, compile, optimize, log the loss."""

from typing import Any, ClassVar, Literal

import lightning as L
from torch import Tensor, nn
from transformers import (
    BaseImageProcessor,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from lit_hf import models
from lit_hf.adapters import PeftTaskType, apply_peft, keep_trainable, restore_frozen
from lit_hf.checks import check_vocabulary
from lit_hf.errors import ConfigError
from lit_hf.models import DType, model_inputs
from lit_hf.optim import adamw_with_schedule
from lit_hf.options import HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions, plain_hparams
from lit_hf.quantization.evaluation import QuantizedEvaluation
from lit_hf.sharding import shard_model
from lit_hf.speed import check_strategy, checkpoint_activations, compile_model

Split = Literal["val", "test"]


class TransformersTask(L.LightningModule):
    """One Hugging Face model (`self.model`) trained on batches of its own keyword arguments.

    A family's `__init__` calls this one first with the shared options, then loads its files with `load_tokenizer`,
    `load_image_processor`, `load_config` and `load_model`. Its `forward` (this one: `self.model(**batch)`) returns
    the model's output with `loss`; `training_step` logs that loss as `train/loss` every step, the mean over
    processes (each process's loss is the mean over its own batch, so N processes log what one process with
    their whole batch does). `validate` and `test` call the family's `evaluate` per batch and `end_evaluation` per
    epoch; metrics and predictions are the family's.

    The families' docstrings document only the options they word differently: jsonargparse reads the `Args:` of
    every class in the hierarchy, the subclass's first. Every task is `lit_hf.contracts.Exportable`: the family
    sets `pipeline_tag`, and overrides `preprocessors` (here: `[self.tokenizer]`) and `generation_config` (here:
    None) where it differs.

    Args:
        model_name_or_path: Hub id or local directory of the model (`from_pretrained`); its tokenizer and config
            too unless `hub` names others.
        hub: Config, tokenizer or image processor, revision, cache and remote code of the model; the data module
            gets the same.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        optim: AdamW and its learning-rate schedule.
        lora: Train LoRA adapters instead of all weights (`--model.lora={}` for the defaults); None: off.
        speed: `torch.compile` and gradient checkpointing.
        quantization: Post-training quantization (torchao) of the evaluated model (`--model.quantization={}`:
            int8 weight-only); None: off. See docs/quantization.md.
    """

    pipeline_tag: ClassVar[str | None] = None
    """The hub's task name for the export's model card (`Exportable`)."""

    def __init__(
        self,
        model_name_or_path: str,
        hub: HubOptions,
        dtype: DType | None,
        from_scratch: bool,
        optim: OptimOptions,
        lora: LoraOptions | None,
        speed: SpeedOptions,
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # the family's options too: Lightning collects every __init__ on the way
        plain_hparams(self)
        if lora is not None and from_scratch:  # checkpoints hold the adapters only: random bases could not be rebuilt
            raise ConfigError("lora trains adapters on pretrained weights; it cannot be combined with from_scratch.")
        self.model_name_or_path, self.hub = model_name_or_path, hub
        self.load_dtype, self.from_scratch = dtype, from_scratch  # (`self.dtype` is the parameters' dtype)
        self.optim, self.lora, self.speed = optim, lora, speed
        self.quantized = None if quantization is None else QuantizedEvaluation(quantization)

    def forward(self, **batch: Tensor) -> Any:
        return self.model(**batch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self(**model_inputs(batch)).loss
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # mean over processes, not rank 0's alone
        return loss

    def on_validation_start(self) -> None:
        self._quantize()

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_validation_end(self) -> None:
        self._unquantize()

    def on_test_start(self) -> None:
        self._quantize()

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def on_predict_start(self) -> None:
        self._quantize()

    def configure_model(self) -> None:
        strategy = self._trainer.strategy if self._trainer is not None else None
        check_strategy(self.speed, strategy)
        shard_model(self)  # only under --trainer.strategy=fsdp: each transformer block one FSDP2 unit
        compile_model(self.model, self.speed)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(self.model, self.optim, int(self.trainer.estimated_stepping_batches))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def evaluate(self, batch: dict[str, Any], split: Split, dataloader_idx: int) -> None:
        """The family's: adds one evaluation batch of `split` (of its `dataloader_idx`-th set) to its metrics."""
        raise NotImplementedError

    def end_evaluation(self, split: Split) -> None:
        """The family's: logs the metrics of `split` over the whole set (reduced across processes) and resets them."""
        raise NotImplementedError

    def preprocessors(self) -> list[Any]:
        """What the export saves beside the weights (`Exportable`): the tokenizer the data used too."""
        return [self.tokenizer]

    def generation_config(self) -> GenerationConfig | None:
        """The export's generation settings (`Exportable`); None: the model does not generate."""
        return None

    # Quantization (lit_hf/quantization): the evaluated model, and the full-precision pass beside it when comparing.

    def _quantize(self) -> None:
        if self.quantized is not None:
            self.quantized.start(self)

    def _unquantize(self) -> None:
        if self.quantized is not None:
            self.quantized.end(self)

    def _evaluate(self, batch: dict[str, Any], split: Split, dataloader_idx: int) -> None:
        if self.quantized is None:
            self.evaluate(batch, split, dataloader_idx)
        else:
            self.quantized.step(lambda: self.evaluate(batch, split, dataloader_idx), self)

    def _end_evaluation(self, split: Split) -> None:
        if self.quantized is None:
            self.end_evaluation(split)
        else:
            self.quantized.end_epoch(lambda: self.end_evaluation(split), self)

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer the data module loads too (`hub.tokenizer_name`, else the model's)."""
        if self.hub.image_processor_name is not None:
            raise ConfigError(f"{type(self).__name__} reads text: hub.image_processor_name is for image tasks.")
        return models.load_tokenizer(self.hub.tokenizer_name or self.model_name_or_path, **self.hub.loading())

    def load_image_processor(self) -> BaseImageProcessor:
        """The image processor the data module loads too (`hub.image_processor_name`, else the model's)."""
        if self.hub.tokenizer_name is not None:
            raise ConfigError(f"{type(self).__name__} reads images: set hub.image_processor_name, not tokenizer_name.")
        name = self.hub.image_processor_name or self.model_name_or_path
        return models.load_image_processor(name, **self.hub.loading())

    def load_config(self) -> PretrainedConfig:
        """The model's config (`hub.config_name`, else the model's own), a copy the family may change."""
        return models.load_config(self.hub.config_name or self.model_name_or_path, **self.hub.loading())

    def load_model(
        self,
        auto_class: type[_BaseAutoModelClass],
        config: PretrainedConfig,
        peft_task_type: PeftTaskType,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config_overrides: str | None = None,
        ignore_mismatched_sizes: bool = False,
        modules_to_save: list[str] | None = None,
    ) -> nn.Module:
        """The model under `config` in train mode, its embeddings grown to `tokenizer`, wrapped in LoRA adapters
        (`peft_task_type` says which head PEFT keeps trainable; `modules_to_save` adds others) and checkpointing
        its activations as the options say. `config_overrides` and `ignore_mismatched_sizes`: `models.load_model`."""
        model: PreTrainedModel = models.load_model(
            auto_class,
            self.model_name_or_path,
            config=config,
            dtype=self.load_dtype,
            from_scratch=self.from_scratch,
            config_overrides=config_overrides,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            **self.hub.loading(),
        )
        model.train()  # from_pretrained returns eval mode: dropout would be off and BatchNorm would not learn
        if tokenizer is not None:
            embeddings = model.get_input_embeddings().weight.shape[0]
            check_vocabulary(len(tokenizer), embeddings, self.hub.tokenizer_name or self.model_name_or_path)
            models.fit_embeddings(model, tokenizer)
        model = apply_peft(model, peft_task_type, self.lora, modules_to_save)
        checkpoint_activations(model, self.speed)
        return model
