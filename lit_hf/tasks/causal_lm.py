"""Causal language modeling: any AutoModelForCausalLM, reporting exact perplexity and next-token accuracy."""

import json
from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor
from transformers import AutoModelForCausalLM

from lit_hf.adapters import PeftMethod, apply_peft, keep_trainable, restore_frozen
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.metrics import NextTokenNLL
from lit_hf.models import DType, fit_embeddings, load_config, load_model, load_tokenizer, max_positions, model_inputs
from lit_hf.optim import SchedulerType, check_optimizer, configure_adamw
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.predictions import append_rows, log_dir, open_shard, write_lines, write_merged
from lit_hf.sharding import shard_model
from lit_hf.speed import CompileMode, checkpoint_activations, compile_model, eager
from lit_hf.tasks.generation import exported_generation_config, generation_options


class CausalLMTask(L.LightningModule):
    """Next-token prediction on batches of `input_ids` and `labels` (the model shifts labels left by one).

    Logs `train/loss` every step; `val/loss`, `val/ppl`, `val/accuracy` (next-token) and `val/scored_tokens` (the
    predicted tokens they are over) once per validation epoch, and the same under `test/`. Perplexity is exp(total
    NLL / predicted tokens) over the whole split, summed in float64 and reduced across processes once at epoch end.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForCausalLM.from_pretrained`.
        config_name: Config to use instead of the model's own (a hub id or directory).
        tokenizer_name: Tokenizer to use instead of the model's own; the data module follows it.
        revision: Hub branch, tag or commit of the model.
        cache_dir: Where downloaded models are stored (default: the Hugging Face cache).
        trust_remote_code: Allow model code from the hub. Only for repositories you trust.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        config_overrides: With from_scratch: comma-separated overrides, e.g. "n_embd=64,n_layer=2,n_head=2".
        learning_rate: Peak AdamW learning rate, reached at the end of warmup.
        weight_decay: Decoupled weight decay for matrices; biases and norm weights get none.
        adam_epsilon: AdamW epsilon.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from zero.
        warmup_steps: Warmup length in optimizer steps (instead of warmup_ratio).
        lr_scheduler_type: Schedule after warmup, as `transformers.get_scheduler` names it.
        max_new_tokens: `predict`: most tokens generated per prompt. Default (for every generation option below):
            the model's own generation config.
        do_sample: Sample instead of greedy or beam search (reproducible with `seed_everything`).
        temperature: Sampling temperature.
        top_k: Sample only from the k most likely tokens.
        top_p: Sample only from the smallest set of tokens whose probability reaches top_p.
        num_beams: Beam width (1: greedy or plain sampling).
        repetition_penalty: Penalty (> 1) on tokens already in the prompt or the completion.
        no_repeat_ngram_size: No n-gram of this size occurs twice in prompt plus completion.
        peft: Train adapters instead of all weights: "lora" (through PEFT). Checkpoints then hold only what trains.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r.
        lora_dropout: Dropout on the input of the LoRA branch.
        lora_target_modules: Module names to adapt, e.g. ["c_attn"]. Default: PEFT's choice for the architecture.
        merge_adapters: The export at the end of fit writes the adapters merged into full weights instead of the
            adapter directory.
        compile: `torch.compile` the model for training and evaluation (`generate` runs eagerly); the first steps
            are slower while it compiles.
        compile_mode: The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels).
        gradient_checkpointing: Recompute each block's activations in the backward pass: less memory, more compute.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "openai-community/gpt2",
        config_name: ModelPath | None = None,
        tokenizer_name: ModelPath | None = None,
        revision: str | None = None,
        cache_dir: LocalPath | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        config_overrides: str | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        lr_scheduler_type: SchedulerType = "linear",
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_beams: int | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        peft: PeftMethod | None = None,
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        merge_adapters: bool = False,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer(learning_rate, weight_decay, adam_epsilon, warmup_ratio, warmup_steps)
        if config_overrides and not from_scratch:
            raise ConfigError("config_overrides changes the architecture, so it needs from_scratch=true.")
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        self.tokenizer = load_tokenizer(tokenizer_name or model_name_or_path, **hub)
        self.model = load_model(
            AutoModelForCausalLM,
            model_name_or_path,
            config=load_config(config_name or model_name_or_path, **hub),
            dtype=dtype,
            from_scratch=from_scratch,
            config_overrides=config_overrides,
            **hub,
        )
        fit_embeddings(self.model, self.tokenizer)
        self.model = apply_peft(self.model, "CAUSAL_LM", self.hparams)
        checkpoint_activations(self.model, self.hparams)
        self.max_positions = max_positions(self.model.config)
        self.generate_kwargs = generation_options(self.tokenizer, self.hparams)
        if self.model.generation_config.pad_token_id is None:  # else generate warns on every batch and picks EOS
            self.generate_kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        self.val_nll = NextTokenNLL()
        self.test_nll = NextTokenNLL()
        self._shard: Path | None = None  # this process's predictions file while `predict` runs

    def forward(self, **batch: Tensor) -> Any:
        return self.model(**batch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self._check_length(batch)
        loss = self.model(**model_inputs(batch), use_cache=False).loss  # with a cache, packed positions are ignored
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # mean over processes, not rank 0's alone
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(self.val_nll, batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_nll, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(self.test_nll, batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_nll, "test")

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

    def configure_model(self) -> None:
        shard_model(self)  # only under --trainer.strategy=fsdp: each transformer block one FSDP2 unit
        compile_model(self)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def _evaluate(self, metric: NextTokenNLL, batch: dict[str, Tensor]) -> None:
        self._check_length(batch)
        logits = self.model(**model_inputs(batch, labels=False), use_cache=False).logits  # the metric computes the loss
        metric.update(logits, batch["labels"])

    def _end_epoch(self, metric: NextTokenNLL, prefix: str) -> None:
        values = metric.compute()  # reduced across processes by torchmetrics, so every rank holds the same
        values["scored_tokens"] = values.pop("tokens")  # the predictions perplexity averages over
        self.log_dict({f"{prefix}/{name}": value for name, value in values.items()}, prog_bar=True)
        metric.reset()

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
