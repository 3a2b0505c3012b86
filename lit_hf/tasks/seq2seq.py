"""Sequence to sequence: any AutoModelForSeq2SeqLM (T5, BART, Marian, mBART, Pegasus) trained on source -> target
pairs; translation scored by corpus SacreBLEU and chrF, summarization by ROUGE as `rouge_score` computes it."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from transformers import AutoModelForSeq2SeqLM, GenerationConfig
from transformers.modeling_outputs import Seq2SeqLMOutput

from lit_hf.chunked_nll import mean_nll, use_chunked_head
from lit_hf.errors import ConfigError
from lit_hf.metrics import BleuTokenize, CorpusRouge, CorpusSacreBLEU, MetricStates, NextTokenNLL
from lit_hf.models import DType
from lit_hf.options import GenerationOptions, HubOptions, LoraOptions, OptimOptions, QuantizationOptions, SpeedOptions
from lit_hf.paths import ModelPath
from lit_hf.predictions import append_rows, log_dir, open_shard, write_lines, write_merged
from lit_hf.sharding import is_sharded_run
from lit_hf.tasks.base import Split, TransformersTask
from lit_hf.tasks.generation import (
    ensure_decoder_start,
    exported_generation_config,
    generate_kwargs,
    generate_texts,
    update_loss,
    warn_if_fp16_overflows,
)


class EvalMetrics(MetricStates):
    """Loss, the family's scores of the hypotheses and their generated length on one evaluation split, each reduced
    across processes."""

    def __init__(self, scores: dict[str, Metric]) -> None:
        super().__init__()
        self.nll = NextTokenNLL(shift=False)  # decoder position t predicts label t
        self.scores = MetricStates(scores)  # update(hypotheses, references); compute(): a score or named scores
        self.gen_len = MeanMetric().set_dtype(torch.float64)  # a float32 mean of lengths drifts on big sets

    def add(self, hypotheses: list[str], references: list[str], lengths: Tensor) -> None:
        for metric in self.scores.values():
            metric.update(hypotheses, references)
        self.gen_len.update(lengths)

    def compute(self, prefix: str, generated: bool) -> dict[str, Tensor]:
        values = {f"{prefix}/loss": self.nll.compute()["loss"].float()}
        for name, metric in self.scores.items() if generated else ():
            score = metric.compute()  # float64: equal to sacrebleu / rouge_score to the last digit
            named = score if isinstance(score, dict) else {name: score}  # ROUGE: rouge1, rouge2, rougeL, rougeLsum
            values.update({f"{prefix}/{key}": value for key, value in named.items()})
        if generated:
            values[f"{prefix}/gen_len"] = self.gen_len.compute().float()
        for metric in (self.nll, *self.scores.values(), self.gen_len):
            metric.reset()
        return values


class Seq2SeqTask(TransformersTask):
    """What translation and summarization share: training and generation on batches of `input_ids`,
    `attention_mask`, `labels`; evaluation batches also carry `index` (position in the split) and `references` (raw
    target texts). A family (`TranslationTask`, `SummarizationTask`) adds its own options and its scores.

    Logs `train/loss` every step; `val/loss` (token-weighted), the family's scores and `val/gen_len` once per epoch;
    the same under `test/`. `validate` and `test` write `val_predictions.txt` / `test_predictions.txt` (one
    hypothesis per line, dataset order) beside `results.json`; `predict` writes `predictions.txt` and
    `predictions.jsonl` in input order.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForSeq2SeqLM.from_pretrained`.
        config_overrides: With from_scratch: comma-separated overrides, e.g. "d_model=64,num_layers=2".
        predict_with_generate: Generate and score the hypotheses in fit's validation too (validate and test always
            do).
        generation: `generate` options; each one unset comes from the model's generation config, except
            max_new_tokens: the data's val_max_target_length (linked by the CLI).
        forced_bos_token: Token forced first in every hypothesis (multilingual models, e.g. mBART's `ro_RO`).
        drop_finished: Greedy search leaves the hypotheses that have ended out of the batch as it decodes
            (the same outputs, fewer steps); false: every batch decodes whole, as one `generate` call.
        lora: Train LoRA adapters instead of all weights (`--model.lora={}`: the defaults); null: off.
        speed: `torch.compile` (`generate` runs eagerly) and gradient checkpointing.
        chunked_loss: Compute the decoder's output layer and the loss together by chunks of rows (training and
            `val/loss`), never holding the (target tokens x vocabulary) logits: the same loss and gradients with
            less memory. Generation (BLEU, ROUGE) is unchanged.
    """

    field: ClassVar[str] = "generated"
    """The jsonl key of a hypothesis in `predictions.jsonl`."""

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
        chunked_loss: bool = False,
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(model_name_or_path, hub, dtype, from_scratch, optim, lora, speed, quantization)
        if config_overrides and not from_scratch:
            raise ConfigError("config_overrides changes the architecture, so it needs from_scratch=true.")
        self.predict_with_generate, self.drop_finished = predict_with_generate, drop_finished
        self.tokenizer = self.load_tokenizer()
        config = self.load_config()
        self.model = self.load_model(
            AutoModelForSeq2SeqLM, config, "SEQ_2_SEQ_LM", tokenizer=self.tokenizer, config_overrides=config_overrides
        )
        ensure_decoder_start(self.model, model_name_or_path)
        self.chunked_loss = chunked_loss
        if chunked_loss:  # the output layer then scores the labels set on it (lit_hf/chunked_nll.py)
            use_chunked_head(self.model)
        self.generate_kwargs = generate_kwargs(generation, self.tokenizer, forced_bos_token)
        self.metrics = nn.ModuleDict({split: EvalMetrics({}) for split in ("val", "test")})
        self.texts = GeneratedTexts(self.field)  # the hypotheses files of validate, test and predict

    def forward(self, **batch: Tensor) -> Any:
        if self.chunked_loss and "labels" in batch:  # training: transformers' loss, without the logits
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            inputs["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
            return Seq2SeqLMOutput(loss=mean_nll(self.model, inputs, batch["labels"].reshape(-1)))
        return self.model(**batch)

    def setup(self, stage: str) -> None:
        warn_if_fp16_overflows(self.model, str(self.trainer.precision) if self._trainer is not None else "")

    def on_validation_epoch_start(self) -> None:
        self.texts.start(self.trainer, "val", self._generates())

    def on_test_epoch_start(self) -> None:
        self.texts.start(self.trainer, "test", self._generates())

    def on_predict_epoch_start(self) -> None:
        self.texts.start(self.trainer, "predictions", generates=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.texts.add(batch, self._generate(batch)[0])  # to disk, not returned: Lightning would keep every batch's

    def on_predict_epoch_end(self) -> None:
        self.texts.finish(self.trainer, "predictions")

    def evaluate(self, batch: dict[str, Any], split: Split, dataloader_idx: int = 0) -> None:
        metrics = self.metrics[split]
        reuse_encoder = not is_sharded_run(self)
        encoder_outputs = update_loss(self.model, metrics.nll, batch, reuse_encoder, chunked=self.chunked_loss)
        if not self._generates():
            return
        hypotheses, lengths = self._generate(batch, encoder_outputs)
        metrics.add(hypotheses, batch["references"], lengths)
        self.texts.add(batch, hypotheses)

    def end_evaluation(self, split: Split) -> None:
        self.log_dict(self.metrics[split].compute(split, self._generates()), prog_bar=True)  # reduced across processes
        self.texts.finish(self.trainer, split)

    def generation_config(self) -> GenerationConfig:
        """The model's generation config with the run's options written in (`max_new_tokens`: the data's
        val_max_target_length unless given), so `generate()` on the export decodes as `predict` did."""
        return exported_generation_config(self.model, self.generate_kwargs)

    def use_scores(self, scores: Callable[[], dict[str, Metric]]) -> None:
        """The family's scores of the hypotheses against the references (`scores()`: fresh metrics by logged name)
        in each evaluation split."""
        self.metrics = nn.ModuleDict({split: EvalMetrics(scores()) for split in ("val", "test")})

    def _generates(self) -> bool:
        return self.predict_with_generate or self.trainer.state.fn != TrainerFn.FITTING

    def _generate(self, batch: dict[str, Any], encoder_outputs: Any = None) -> tuple[list[str], Tensor]:
        kwargs = {**self.generate_kwargs, "synced_gpus": is_sharded_run(self)}  # ranks that finish keep gathering
        return generate_texts(self.model, self.tokenizer, batch, kwargs, encoder_outputs, self.drop_finished)


class TranslationTask(Seq2SeqTask):
    """Translation: a `Seq2SeqTask` scored by corpus SacreBLEU and chrF.

    `bleu` and `chrf` equal `sacrebleu.corpus_bleu` / `corpus_chrf` on the same strings on any number of processes.
    Logs `train/loss` every step; `val/loss` (token-weighted), `val/bleu`, `val/chrf` and `val/gen_len` once per
    epoch; the same under `test/`. `validate` and `test` write `val_predictions.txt` / `test_predictions.txt` (one
    hypothesis per line, dataset order) beside `results.json`; `predict` writes `predictions.txt` and
    `predictions.jsonl` (`{"index", "translation"}`) in input order.

    Args:
        predict_with_generate: Generate and score BLEU/chrF in fit's validation too (validate and test always do).
        forced_bos_token: Token forced first in every translation, e.g. `ro_RO` for mBART-50 or `__ro__` for M2M100.
        bleu_tokenize: SacreBLEU tokenizer for `bleu` ("13a" as sacrebleu's default; "zh", "ja-mecab" etc.).
    """

    pipeline_tag = "translation"
    field = "translation"

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
        bleu_tokenize: BleuTokenize = "13a",
        drop_finished: bool = True,
        optim: OptimOptions = OptimOptions(),
        lora: LoraOptions | None = None,
        speed: SpeedOptions = SpeedOptions(),
        chunked_loss: bool = False,
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(
            model_name_or_path,
            hub,
            dtype,
            from_scratch,
            config_overrides,
            predict_with_generate,
            generation,
            forced_bos_token,
            drop_finished,
            optim,
            lora,
            speed,
            chunked_loss,
            quantization,
        )
        self.use_scores(
            lambda: {"bleu": CorpusSacreBLEU("bleu", tokenize=bleu_tokenize), "chrf": CorpusSacreBLEU("chrf")}
        )


class SummarizationTask(Seq2SeqTask):
    """Summarization: a `Seq2SeqTask` scored by ROUGE.

    ROUGE is the mean over all examples of `rouge_score`'s F-measures with stemming, 0-100, on any number of processes.
    Logs `train/loss` every step; `val/loss` (token-weighted), `val/rouge1`, `val/rouge2`, `val/rougeL`,
    `val/rougeLsum` and `val/gen_len` once per epoch; the same under `test/`. `validate` and `test` write
    `val_predictions.txt` / `test_predictions.txt` (one summary per line, dataset order) beside `results.json`;
    `predict` writes `predictions.txt` and `predictions.jsonl` (`{"index", "summary"}`) in input order.

    Args:
        predict_with_generate: Generate and score ROUGE in fit's validation too (validate and test always do).
        forced_bos_token: Token forced first in every summary (multilingual models, e.g. mBART's `en_XX`).
    """

    pipeline_tag = "summarization"
    field = "summary"

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
        chunked_loss: bool = False,
        quantization: QuantizationOptions | None = None,
    ) -> None:
        super().__init__(
            model_name_or_path,
            hub,
            dtype,
            from_scratch,
            config_overrides,
            predict_with_generate,
            generation,
            forced_bos_token,
            drop_finished,
            optim,
            lora,
            speed,
            chunked_loss,
            quantization,
        )
        self.use_scores(lambda: {"rouge": CorpusRouge(use_stemmer=True)})  # logs rouge1, rouge2, rougeL, rougeLsum


class GeneratedTexts:
    """`validate` and `test` write `<prefix>_predictions.txt` (fit's validation and the sanity check do not);
    `predict` writes `predictions.txt` and `predictions.jsonl` (`{"index": ..., field: ...}`), all in dataset
    order on any number of processes. Rows go to disk as they are made, so memory does not grow with the set.

    A helper the task holds (not a base class): call `start`/`add`/`finish` from the task's epoch hooks.
    """

    def __init__(self, field: str) -> None:
        self.field = field  # "translation", "summary": the jsonl key of a hypothesis
        self._shard: Path | None = None  # this process's file while an epoch that writes runs

    def start(self, trainer: L.Trainer, prefix: str, generates: bool) -> None:
        """At epoch start (a collective call): `prefix` is "val", "test" or "predictions"."""
        writes = trainer.state.fn in (TrainerFn.VALIDATING, TrainerFn.TESTING) and not trainer.sanity_checking
        writes = writes or trainer.state.fn == TrainerFn.PREDICTING
        self._shard = open_shard(trainer, prefix) if writes and generates else None

    def add(self, batch: dict[str, Any], hypotheses: list[str]) -> None:
        if self._shard is not None:
            rows = zip(batch["index"].tolist(), hypotheses, strict=True)
            append_rows(self._shard, ({"index": i, self.field: text} for i, text in rows))

    def finish(self, trainer: L.Trainer, prefix: str) -> None:
        """At epoch end (a collective call): rank zero merges the shards into the files."""
        if self._shard is None:
            return
        self._shard = None
        folder = log_dir(trainer)
        if prefix != "predictions":
            path = folder / f"{prefix}_predictions.txt"
            write_merged(trainer, prefix, lambda rows: write_lines(path, (row[self.field] for row in rows)))
            return

        def write(rows: Iterator[dict[str, Any]]) -> None:
            with open(folder / "predictions.txt", "w", encoding="utf-8") as txt:
                with open(folder / "predictions.jsonl", "w", encoding="utf-8") as jsonl:
                    for row in rows:
                        txt.write(row[self.field] + "\n")
                        jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")

        write_merged(trainer, prefix, write)
        if trainer.is_global_zero:  # as the other families' predict says
            print(f"predictions written to {folder / 'predictions'}.txt and .jsonl")
