"""Translation: any AutoModelForSeq2SeqLM (T5, BART, Marian, mBART), scored by corpus SacreBLEU and chrF."""

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from lit_hf.data.sampling import gather_by_index
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.hub import from_hub
from lit_hf.metrics import BleuTokenize, CorpusSacreBLEU, NextTokenNLL
from lit_hf.models import DType, load_model
from lit_hf.optim import SchedulerType, adamw_with_schedule, check_warmup

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")
T5_FAMILY = ("t5", "mt5", "umt5")  # in float16 their activations overflow (T5 was trained in bfloat16)


class EvalMetrics(torch.nn.Module):
    """Loss, BLEU, chrF and generated length of one evaluation split, each reduced across processes."""

    def __init__(self, bleu_tokenize: BleuTokenize) -> None:
        super().__init__()
        self.nll = NextTokenNLL(shift=False)  # decoder position t predicts label t
        self.bleu = CorpusSacreBLEU("bleu", tokenize=bleu_tokenize)
        self.chrf = CorpusSacreBLEU("chrf")
        self.gen_len = MeanMetric()

    def compute(self, prefix: str, generated: bool) -> dict[str, Tensor]:
        values = {f"{prefix}/loss": self.nll.compute()["loss"].float()}
        if generated:
            values[f"{prefix}/bleu"] = self.bleu.compute()  # float64: equal to sacrebleu to the last digit
            values[f"{prefix}/chrf"] = self.chrf.compute()
            values[f"{prefix}/gen_len"] = self.gen_len.compute().float()
        for metric in (self.nll, self.bleu, self.chrf, self.gen_len):
            metric.reset()
        return values


class TranslationTask(L.LightningModule):
    """Sequence-to-sequence training and generation on batches of `input_ids`, `attention_mask`, `labels`.

    Evaluation batches also carry `index` (position in the split) and `references` (raw target texts). Logs
    `train/loss` every step; `val/loss` (token-weighted), `val/bleu` and `val/chrf` (corpus SacreBLEU, equal to
    `sacrebleu.corpus_bleu` on the same strings on any number of processes) and `val/gen_len` once per epoch;
    the same under `test/`. `validate` and `test` write `val_predictions.txt` / `test_predictions.txt` (one
    hypothesis per line, dataset order) beside `results.json`; `predict` writes `predictions.txt` and
    `predictions.jsonl` in input order.

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
        predict_with_generate: Generate and score BLEU/chrF in fit's validation too (validate and test always do).
        num_beams: Beam width for generation. Default: the model's generation config.
        max_new_tokens: Longest generated translation in tokens. Default: the data's val_max_target_length
            (linked by the CLI), else the model's generation config.
        forced_bos_token: Token forced first in every translation, e.g. `ro_RO` for mBART-50 or `__ro__` for M2M100.
        bleu_tokenize: SacreBLEU tokenizer for `bleu` ("13a" as sacrebleu's default; "zh", "ja-mecab" etc.).
        learning_rate: Peak AdamW learning rate, reached at the end of warmup.
        weight_decay: Decoupled weight decay for matrices; biases and norm weights get none.
        adam_epsilon: AdamW epsilon.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from zero.
        warmup_steps: Warmup length in optimizer steps (instead of warmup_ratio).
        lr_scheduler_type: Schedule after warmup, as `transformers.get_scheduler` names it.
    """

    def __init__(
        self,
        model_name_or_path: str = "google-t5/t5-small",
        config_name: str | None = None,
        tokenizer_name: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        config_overrides: str | None = None,
        predict_with_generate: bool = True,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        forced_bos_token: str | None = None,
        bleu_tokenize: BleuTokenize = "13a",
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        adam_epsilon: float = 1e-8,
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        lr_scheduler_type: SchedulerType = "linear",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_warmup(warmup_ratio, warmup_steps)
        if config_overrides and not from_scratch:
            raise ConfigError("config_overrides changes the architecture, so it needs from_scratch=true.")
        for name in ("num_beams", "max_new_tokens"):
            if (value := getattr(self.hparams, name)) is not None and value < 1:
                raise ConfigError(f"{name} must be positive, got {value}.")
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        self.model = load_model(
            AutoModelForSeq2SeqLM,
            model_name_or_path,
            config_name=config_name,
            dtype=dtype,
            from_scratch=from_scratch,
            config_overrides=config_overrides,
            **hub,
        )
        self.tokenizer = from_hub(
            AutoTokenizer.from_pretrained, tokenizer_name or model_name_or_path, "tokenizer", **hub
        )
        if len(self.tokenizer) > self.model.get_input_embeddings().weight.shape[0]:
            self.model.resize_token_embeddings(len(self.tokenizer))  # only grow: shrinking would drop trained rows
        self._check_decoder_start()
        self.generate_kwargs = self._generate_kwargs()
        self.val_metrics = EvalMetrics(bleu_tokenize)
        self.test_metrics = EvalMetrics(bleu_tokenize)
        self.outputs: list[tuple[int, str]] = []  # (index in the split, hypothesis) on this process, CPU only

    def forward(self, **batch: Tensor) -> Any:
        return self.model(**batch)

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision) if self._trainer is not None else ""
        if precision.startswith("16") and self.model.config.model_type in T5_FAMILY:
            rank_zero_warn(
                f"{self.model.config.model_type} in float16 ({precision}) overflows to NaN; "
                "use --trainer.precision=bf16-mixed (or 32-true where bfloat16 is unsupported)."
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.model(**{k: batch[k] for k in MODEL_INPUTS}).loss  # mean over labels that are not -100
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.test_metrics, batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        hypotheses, _ = self._generate(batch)
        self.outputs.extend(zip(batch["index"].tolist(), hypotheses, strict=True))
        return hypotheses

    def on_predict_epoch_end(self) -> None:
        translations = self._gather_in_order()
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective: every rank calls it
        if self.trainer.is_global_zero:
            write_lines(log_dir / "predictions.txt", translations)
            rows = [
                json.dumps({"index": i, "translation": text}, ensure_ascii=False) for i, text in enumerate(translations)
            ]
            write_lines(log_dir / "predictions.jsonl", rows)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_with_schedule(
            self.model,
            total_steps=int(self.trainer.estimated_stepping_batches),
            learning_rate=hp.learning_rate,
            weight_decay=hp.weight_decay,
            adam_epsilon=hp.adam_epsilon,
            warmup_ratio=hp.warmup_ratio,
            warmup_steps=hp.warmup_steps,
            lr_scheduler_type=hp.lr_scheduler_type,
        )

    def _generates(self) -> bool:
        return self.hparams.predict_with_generate or self.trainer.state.fn != TrainerFn.FITTING

    def _evaluate(self, metrics: EvalMetrics, batch: dict[str, Any]) -> None:
        labels = batch["labels"]
        # The loss and generation read one encoder pass: the same outputs as two, for one pass less per batch.
        encoder_outputs = self.model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = self.model(
            encoder_outputs=encoder_outputs,
            attention_mask=batch["attention_mask"],
            decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels=labels),
        ).logits  # (batch, target_len, vocab)
        metrics.nll.update(logits, labels)
        if not self._generates():
            return
        hypotheses, lengths = self._generate(batch, encoder_outputs)
        metrics.bleu.update(hypotheses, batch["references"])
        metrics.chrf.update(hypotheses, batch["references"])
        metrics.gen_len.update(lengths)
        if not self.trainer.sanity_checking:
            self.outputs.extend(zip(batch["index"].tolist(), hypotheses, strict=True))

    def _generate(self, batch: dict[str, Any], encoder_outputs: Any = None) -> tuple[list[str], Tensor]:
        """Hypotheses as text (nothing stays on the device) and their lengths in non-padding tokens."""
        if encoder_outputs is not None:  # generate reuses them instead of running the encoder again
            kwargs = {**self.generate_kwargs, "encoder_outputs": encoder_outputs}
        else:
            kwargs = self.generate_kwargs
        tokens = self.model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs
        )  # (batch, generated_len), starting with the decoder start token
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        lengths = (tokens != self.tokenizer.pad_token_id).sum(-1).float()  # as run_translation.py counts gen_len
        return [text.strip().replace("\r", " ").replace("\n", " ") for text in texts], lengths  # one per line

    def _end_epoch(self, metrics: EvalMetrics, prefix: str) -> None:
        generated = self._generates()
        self.log_dict(metrics.compute(prefix, generated), prog_bar=True)  # reduced across processes
        writes = self.trainer.state.fn in (TrainerFn.VALIDATING, TrainerFn.TESTING) and not self.trainer.sanity_checking
        if not (generated and writes):
            self.outputs.clear()
            return
        hypotheses = self._gather_in_order()
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective: every rank calls it
        if self.trainer.is_global_zero:
            write_lines(log_dir / f"{prefix}_predictions.txt", hypotheses)

    def _gather_in_order(self) -> list[str]:
        """Every process's (index, text) pairs, on every process, as texts in dataset order."""
        pairs, self.outputs = self.outputs, []
        ordered = gather_by_index(pairs)
        if [index for index, _ in ordered] != list(range(len(ordered))):
            rank_zero_warn(f"Only {len(ordered)} examples were generated (limit_*_batches?); written in order.")
        return [text for _, text in ordered]

    def _check_decoder_start(self) -> None:
        """T5 decodes from the pad token; a `T5Config()` made in transformers 5 leaves decoder_start_token_id out."""
        config = self.model.config
        if getattr(config, "decoder_start_token_id", None) is not None:
            return
        if config.model_type not in T5_FAMILY:
            name = self.hparams.model_name_or_path
            raise LitHFError(f"The config of {name!r} has no decoder_start_token_id; set it in config.json.")
        config.decoder_start_token_id = config.pad_token_id
        self.model.generation_config.decoder_start_token_id = config.pad_token_id

    def _generate_kwargs(self) -> dict[str, Any]:
        hp = self.hparams
        kwargs: dict[str, Any] = {}
        if hp.num_beams is not None:
            kwargs["num_beams"] = hp.num_beams
        if hp.max_new_tokens is not None:
            kwargs["max_new_tokens"] = hp.max_new_tokens
        if hp.forced_bos_token is not None:
            token_id = self.tokenizer.convert_tokens_to_ids(hp.forced_bos_token)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ConfigError(f"forced_bos_token {hp.forced_bos_token!r} is not a token of the tokenizer.")
            kwargs["forced_bos_token_id"] = token_id
        return kwargs


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
