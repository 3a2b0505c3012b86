"""Summarization: any AutoModelForSeq2SeqLM (T5, BART, Pegasus), scored by ROUGE as `rouge_score` computes it."""

from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MeanMetric
from transformers import AutoModelForSeq2SeqLM

from lit_hf.errors import ConfigError
from lit_hf.metrics import CorpusRouge, MetricStates, NextTokenNLL
from lit_hf.models import DType
from lit_hf.options import GenerationOptions, HubOptions, LoraOptions, OptimOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.sharding import is_sharded_run
from lit_hf.tasks.base import TransformersTask
from lit_hf.tasks.generated_texts import GeneratedTexts
from lit_hf.tasks.generation import (
    ensure_decoder_start,
    generate_kwargs,
    generate_texts,
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


class SummarizationTask(TransformersTask):
    """Sequence-to-sequence training and generation on batches of `input_ids`, `attention_mask`, `labels`.

    Evaluation batches also carry `index` (position in the split) and `references` (raw summaries). Logs
    `train/loss` every step; `val/loss` (token-weighted), `val/rouge1`, `val/rouge2`, `val/rougeL` and
    `val/rougeLsum` (the mean over all examples of `rouge_score`'s F-measures with stemming, 0-100, on any number
    of processes) and `val/gen_len` once per epoch; the same under `test/`. `validate` and `test` write
    `val_predictions.txt` / `test_predictions.txt` (one summary per line, dataset order) beside `results.json`;
    `predict` writes `predictions.txt` and `predictions.jsonl` in input order.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForSeq2SeqLM.from_pretrained`.
        hub: Config, tokenizer, revision, cache and remote code of the model; the data module gets the same.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
        config_overrides: With from_scratch: comma-separated overrides, e.g. "d_model=64,num_layers=2".
        predict_with_generate: Generate and score ROUGE in fit's validation too (validate and test always do).
        generation: `generate` options; each one unset comes from the model's generation config, except
            max_new_tokens: the data's val_max_target_length (linked by the CLI).
        forced_bos_token: Token forced first in every summary (multilingual models, e.g. mBART's `en_XX`).
        drop_finished: Greedy search leaves the summaries that have ended out of the batch as it decodes
            (the same outputs, fewer steps); false: every batch decodes whole, as one `generate` call.
        optim: AdamW and its learning-rate schedule.
        lora: Train LoRA adapters instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` (`generate` runs eagerly) and gradient checkpointing.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-t5/t5-small",
        hub: HubOptions = HubOptions(),
        dtype: DType | None = None,
        from_scratch: bool = False,
        config_overrides: str | None = None,
        predict_with_generate: bool = True,
        generation: GenerationOptions = GenerationOptions(),
        forced_bos_token: str | None = None,
        drop_finished: bool = True,
        optim: OptimOptions = OptimOptions(),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed)
        if config_overrides and not from_scratch:
            raise ConfigError("config_overrides changes the architecture, so it needs from_scratch=true.")
        self.predict_with_generate, self.drop_finished = predict_with_generate, drop_finished
        self.tokenizer = self.load_tokenizer()
        config = self.load_config()
        self.model = self.load_model(
            AutoModelForSeq2SeqLM, config, "SEQ_2_SEQ_LM", tokenizer=self.tokenizer, config_overrides=config_overrides
        )
        ensure_decoder_start(self.model, model_name_or_path)
        self.generate_kwargs = generate_kwargs(generation, self.tokenizer, forced_bos_token)
        self.val_metrics = EvalMetrics()
        self.test_metrics = EvalMetrics()
        self.texts = GeneratedTexts("summary")  # the hypotheses files of validate, test and predict

    def setup(self, stage: str) -> None:
        warn_if_fp16_overflows(self.model, str(self.trainer.precision) if self._trainer is not None else "")

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

    def _generates(self) -> bool:
        return self.predict_with_generate or self.trainer.state.fn != TrainerFn.FITTING

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
        return generate_texts(self.model, self.tokenizer, batch, kwargs, encoder_outputs, self.drop_finished)

    def _end_epoch(self, metrics: EvalMetrics, prefix: str) -> None:
        self.log_dict(metrics.compute(prefix, self._generates()), prog_bar=True)  # reduced across processes
        self.texts.finish(self.trainer, prefix)
