"""Causal language modeling: any AutoModelForCausalLM, reporting exact perplexity and next-token accuracy."""

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.modeling_outputs import CausalLMOutput

from lit_hf.chunked_nll import mean_nll, next_token_targets, nll_sums, use_chunked_head
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.metrics import NextTokenNLL
from lit_hf.models import DType, max_positions, model_inputs
from lit_hf.options import GenerationOptions, HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.predictions import append_rows, log_dir, open_shard, write_lines, write_merged
from lit_hf.speed import eager
from lit_hf.tasks.base import Split, TransformersTask
from lit_hf.tasks.generation import exported_generation_config, generate_kwargs


class CausalLMTask(TransformersTask):
    """Next-token prediction on batches of `input_ids` and `labels` (the model shifts labels left by one).

    Logs `train/loss` every step; `val/loss`, `val/ppl`, `val/accuracy` (next-token) and `val/scored_tokens` (the
    predicted tokens they are over) once per validation epoch, and the same under `test/`. Perplexity is exp(total
    NLL / predicted tokens) over the whole split, summed in float64 and reduced across processes once at epoch end.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForCausalLM.from_pretrained`.
        config_overrides: With from_scratch: comma-separated overrides, e.g. "n_embd=64,n_layer=2,n_head=2".
        lora: Train LoRA adapters instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` (`generate` runs eagerly) and gradient checkpointing.
        generation: `predict`'s `generate` options; each one unset comes from the model's generation config.
        chunked_loss: Compute the output layer and the loss together by chunks of rows, in training and evaluation,
            never holding the (tokens x vocabulary) logits: the same loss, gradients and perplexity with less
            memory. Refused for models that change the logits after their output layer (soft-capping, scales).
    """

    pipeline_tag = "text-generation"

    def __init__(
        self,
        model_name_or_path: ModelPath = "openai-community/gpt2",
        hub: HubOptions = HubOptions(),
        dtype: DType | None = None,
        from_scratch: bool = False,
        config_overrides: str | None = None,
        optim: OptimOptions = OptimOptions(),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
        quantization: QuantizationOptions | None = None,
        generation: GenerationOptions = GenerationOptions(),
        chunked_loss: bool = False,
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed, quantization)
        if config_overrides and not from_scratch:
            raise ConfigError("config_overrides changes the architecture, so it needs from_scratch=true.")
        self.tokenizer = self.load_tokenizer()
        config = self.load_config()
        self.model = self.load_model(
            AutoModelForCausalLM, config, "CAUSAL_LM", tokenizer=self.tokenizer, config_overrides=config_overrides
        )
        name_loss(self.model)
        self.chunked_loss = chunked_loss
        if chunked_loss:  # the output layer then scores the labels set on it (lit_hf/chunked_nll.py)
            use_chunked_head(self.model)
        self.max_positions = max_positions(self.model.config)
        self.generate_kwargs = generate_kwargs(generation, self.tokenizer)
        if self.model.generation_config.pad_token_id is None:  # else generate warns on every batch and picks EOS
            self.generate_kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        self.nll = nn.ModuleDict({split: NextTokenNLL() for split in ("val", "test")})
        self._shard: Path | None = None  # this process's predictions file while `predict` runs

    def forward(self, **batch: Tensor) -> Any:
        self._check_length(batch)
        if self.chunked_loss and "labels" in batch:  # training: transformers' loss, without the logits
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            return CausalLMOutput(loss=mean_nll(self.model, inputs, next_token_targets(batch["labels"])))
        return self.model(**batch, use_cache=False)  # with a cache, packed positions are ignored

    def evaluate(self, batch: dict[str, Tensor], split: Split, dataloader_idx: int = 0) -> None:
        if self.chunked_loss:  # the same float64 sums, chunk by chunk inside the output layer
            self._check_length(batch)
            inputs, targets = model_inputs(batch, labels=False), next_token_targets(batch["labels"])
            self.nll[split].update(sums=nll_sums(self.model, inputs, targets))
            return
        logits = self(**model_inputs(batch, labels=False)).logits  # the metric computes the loss
        self.nll[split].update(logits, batch["labels"])

    def end_evaluation(self, split: Split) -> None:
        values = self.nll[split].compute()  # reduced across processes by torchmetrics, so every rank holds the same
        values["scored_tokens"] = values.pop("tokens")  # the predictions perplexity averages over
        self.log_dict({f"{split}/{name}": value for name, value in values.items()}, prog_bar=True)
        self.nll[split].reset()

    def on_predict_epoch_start(self) -> None:
        self._shard = open_shard(self.trainer, "predictions")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Continues left-padded prompts; the completion is the text of the new tokens only, as
        `pipeline("text-generation", return_full_text=False)` decodes it."""
        completions = [self.tokenizer.decode(new, skip_special_tokens=True) for new in self._generate(batch)]
        rows = zip(batch["index"].tolist(), batch["prompt"], completions, strict=True)
        append_rows(self._shard, ({"index": i, "prompt": p, "completion": c} for i, p, c in rows))

    def on_predict_epoch_end(self) -> None:
        path = log_dir(self.trainer) / "predictions.jsonl"
        write_merged(self.trainer, "predictions", lambda rows: write_lines(path, map(json.dumps, rows)))
        if self.trainer.is_global_zero:
            print(f"predictions written to {path}")

    def generation_config(self) -> GenerationConfig:
        """The model's generation config with the run's options written in, for the export. Where neither they nor
        the model's own config limit the length, it stops at the model's positions, prompt included: `pipeline()`
        would otherwise ask for 256 new tokens after any prompt, past the positions of a small model."""
        config = exported_generation_config(self.model, self.generate_kwargs)
        limited = config.max_new_tokens is not None or "max_length" in config.to_diff_dict()
        if not limited and self.max_positions is not None:
            config.max_length = self.max_positions
        return config

    def _generate(self, batch: dict[str, Any]) -> list[Tensor]:
        """The new tokens of each prompt. Options that count tokens over the whole sequence (no_repeat_ngram_size,
        repetition_penalty) would count the left padding too, so with them each prompt is generated alone."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        config = exported_generation_config(self.model, self.generate_kwargs)
        if config.no_repeat_ngram_size or (config.repetition_penalty or 1.0) != 1.0:
            rows = [row[keep.bool()][None] for row, keep in zip(ids, mask, strict=True)]
            with eager():  # a compiled model would recompile as the sequence grows
                return [self.model.generate(input_ids=r, **self.generate_kwargs)[0, r.shape[1] :].cpu() for r in rows]
        with eager():
            tokens = self.model.generate(input_ids=ids, attention_mask=mask, **self.generate_kwargs)
        return list(tokens[:, ids.shape[1] :].cpu())  # (prompt_len + new tokens) per row; the new ones

    def _check_length(self, batch: dict[str, Tensor]) -> None:
        length = batch["input_ids"].shape[1]
        if self.max_positions is not None and length > self.max_positions:
            raise LitHFError(
                f"Blocks of {length} tokens exceed the model's {self.max_positions} positions; lower --data.block_size."
            )


def name_loss(model: nn.Module) -> None:
    """The next-token loss named on the model (and on a LoRA wrapper's base), which transformers picks anyway for
    architectures whose class name does not say it (`GPT2LMHeadModel`), after a "`loss_type=None` ... unrecognized"
    notice at the first step."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "loss_type", None) is None:
        base.loss_type = "ForCausalLM"
