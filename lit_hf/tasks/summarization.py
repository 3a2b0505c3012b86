"""Summarization: any AutoModelForSeq2SeqLM (T5, BART, Pegasus), scored by ROUGE as `rouge_score` computes it."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MeanMetric
from transformers import AutoModelForSeq2SeqLM

from lit_hf.adapters import PeftMethod, apply_peft, keep_trainable, restore_frozen
from lit_hf.errors import ConfigError, check_positive
from lit_hf.metrics import CorpusRouge, MetricStates, NextTokenNLL
from lit_hf.models import DType, fit_embeddings, load_config, load_model, load_tokenizer, model_inputs
from lit_hf.optim import SchedulerType, check_optimizer, configure_adamw
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.sharding import is_sharded_run, shard_model
from lit_hf.speed import CompileMode, checkpoint_activations, compile_model
from lit_hf.tasks.generated_texts import GeneratedTexts
from lit_hf.tasks.generation import (
    ensure_decoder_start,
    generate_texts,
    generation_options,
    update_loss,
    warn_if_fp16_overflows,
)


class EvalMetrics(MetricStates):
    """Loss, ROUGE and generated length of one evaluation split, each reduced across processes."""

    def __init__(self) -> None:
        super().__init__()
        self.nll = NextTokenNLL(shift=False)  # decoder position t predicts label t
        self.rouge = CorpusRouge(use_stemmer=True)
        self.gen_len = MeanMetric().set_dtype(torch.float64)  # a float32 mean of lengths drifts on big sets

    def compute(self, prefix: str, generated: bool) -> dict[str, Tensor]:
        values = {f"{prefix}/loss": self.nll.compute()["loss"].float()}
        if generated:
            values.update({f"{prefix}/{name}": value for name, value in self.rouge.compute().items()})  # float64
            values[f"{prefix}/gen_len"] = self.gen_len.compute().float()
        for metric in (self.nll, self.rouge, self.gen_len):
            metric.reset()
        return values


class SummarizationTask(L.LightningModule):
    """Sequence-to-sequence training and generation on batches of `input_ids`, `attention_mask`, `labels`.

    Evaluation batches also carry `index` (position in the split) and `references` (raw summaries). Logs
    `train/loss` every step; `val/loss` (token-weighted), `val/rouge1`, `val/rouge2`, `val/rougeL` and
    `val/rougeLsum` (the mean over all examples of `rouge_score`'s F-measures with stemming, 0-100, on any number
    of processes) and `val/gen_len` once per epoch; the same under `test/`. `validate` and `test` write
    `val_predictions.txt` / `test_predictions.txt` (one summary per line, dataset order) beside `results.json`;
    `predict` writes `predictions.txt` and `predictions.jsonl` in input order.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForSeq2SeqLM.from_pretrained`.
        config_name: Config to use instead of the model's own (a hub id or directory).
        tokenizer_name: Tokenizer to use instead of the model's own; the data module follows it.
        revision: Hub branch, tag or commit of the model.
        cache_dir: Where downloaded models are stored (default: the Hugging Face cache).
        trust_remote_code: Allow model code from the hub. Only for repositories you trust.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        config_overrides: With from_scratch: comma-separated overrides, e.g. "d_model=64,num_layers=2".
        predict_with_generate: Generate and score ROUGE in fit's validation too (validate and test always do).
        num_beams: Beam width for generation. Default (for every generation option): the model's generation config.
        max_new_tokens: Longest generated summary in tokens. Default: the data's val_max_target_length
            (linked by the CLI), else the model's generation config.
        forced_bos_token: Token forced first in every summary (multilingual models, e.g. mBART's `en_XX`).
        length_penalty: Beam scores are divided by length ** length_penalty (> 0 favours longer summaries).
        no_repeat_ngram_size: No n-gram of this size occurs twice in a summary.
        early_stopping: Beam search stops once num_beams finished candidates exist.
        do_sample: Sample instead of greedy or beam search (seeded by `seed_everything`).
        temperature: Sampling temperature.
        top_k: Sample only from the k most likely tokens.
        top_p: Sample only from the smallest set of tokens whose probability reaches top_p.
        repetition_penalty: Penalty (> 1) on tokens already generated.
        drop_finished: Greedy search leaves the summaries that have ended out of the batch as it decodes
            (the same outputs, fewer steps); false: every batch decodes whole, as one `generate` call.
        learning_rate: Peak AdamW learning rate, reached at the end of warmup.
        weight_decay: Decoupled weight decay for matrices; biases and norm weights get none.
        adam_epsilon: AdamW epsilon.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from zero.
        warmup_steps: Warmup length in optimizer steps (instead of warmup_ratio).
        lr_scheduler_type: Schedule after warmup, as `transformers.get_scheduler` names it.
        peft: Train adapters instead of all weights: "lora" (through PEFT). Checkpoints then hold only what trains.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r.
        lora_dropout: Dropout on the input of the LoRA branch.
        lora_target_modules: Module names to adapt, e.g. ["query", "value"]. Default: PEFT's choice for the
            architecture.
        merge_adapters: The export at the end of fit writes the adapters merged into full weights instead of the
            adapter directory.
        compile: `torch.compile` the model for training and evaluation (`generate` runs eagerly); the first steps
            are slower while it compiles.
        compile_mode: The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels).
        gradient_checkpointing: Recompute each block's activations in the backward pass: less memory, more compute.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-t5/t5-small",
        config_name: ModelPath | None = None,
        tokenizer_name: ModelPath | None = None,
        revision: str | None = None,
        cache_dir: LocalPath | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        config_overrides: str | None = None,
        predict_with_generate: bool = True,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        forced_bos_token: str | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        early_stopping: bool | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        drop_finished: bool = True,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        lr_scheduler_type: SchedulerType = "linear",
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
        check_positive(num_beams=num_beams, max_new_tokens=max_new_tokens)
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        self.tokenizer = load_tokenizer(tokenizer_name or model_name_or_path, **hub)
        self.model = load_model(
            AutoModelForSeq2SeqLM,
            model_name_or_path,
            config=load_config(config_name or model_name_or_path, **hub),
            dtype=dtype,
            from_scratch=from_scratch,
            config_overrides=config_overrides,
            **hub,
        )
        fit_embeddings(self.model, self.tokenizer)
        self.model = apply_peft(self.model, "SEQ_2_SEQ_LM", self.hparams)
        checkpoint_activations(self.model, self.hparams)
        ensure_decoder_start(self.model, model_name_or_path)
        self.generate_kwargs = generation_options(self.tokenizer, self.hparams, forced_bos_token)
        self.val_metrics = EvalMetrics()
        self.test_metrics = EvalMetrics()
        self.texts = GeneratedTexts("summary")  # the summaries files of validate, test and predict

    def forward(self, **batch: Tensor) -> Any:
        return self.model(**batch)

    def setup(self, stage: str) -> None:
        warn_if_fp16_overflows(self.model, str(self.trainer.precision) if self._trainer is not None else "")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.model(**model_inputs(batch)).loss  # mean over labels that are not -100
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.texts.start(self.trainer, "val", self._generates())

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_metrics, "val")

    def on_test_epoch_start(self) -> None:
        self.texts.start(self.trainer, "test", self._generates())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.test_metrics, batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_metrics, "test")

    def on_predict_epoch_start(self) -> None:
        self.texts.start(self.trainer, "predictions", generates=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.texts.add(batch, self._generate(batch)[0])  # to disk, not returned: Lightning would keep every batch's

    def on_predict_epoch_end(self) -> None:
        self.texts.finish(self.trainer, "predictions")

    def configure_model(self) -> None:
        shard_model(self)  # only under --trainer.strategy=fsdp: each transformer block one FSDP2 unit
        compile_model(self)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def _generates(self) -> bool:
        return self.hparams.predict_with_generate or self.trainer.state.fn != TrainerFn.FITTING

    def _evaluate(self, metrics: EvalMetrics, batch: dict[str, Any]) -> None:
        encoder_outputs = update_loss(self.model, metrics.nll, batch, reuse_encoder=not is_sharded_run(self))
        if not self._generates():
            return
        hypotheses, lengths = self._generate(batch, encoder_outputs)
        metrics.rouge.update(hypotheses, batch["references"])
        metrics.gen_len.update(lengths)
        self.texts.add(batch, hypotheses)

    def _generate(self, batch: dict[str, Any], encoder_outputs: Any = None) -> tuple[list[str], Tensor]:
        kwargs = {**self.generate_kwargs, "synced_gpus": is_sharded_run(self)}  # ranks that finish keep gathering
        return generate_texts(self.model, self.tokenizer, batch, kwargs, encoder_outputs, self.hparams.drop_finished)

    def _end_epoch(self, metrics: EvalMetrics, prefix: str) -> None:
        self.log_dict(metrics.compute(prefix, self._generates()), prog_bar=True)  # reduced across processes
        self.texts.finish(self.trainer, prefix)
