"""Multiple choice: any AutoModelForMultipleChoice (BERT, RoBERTa, ...), scored by exact accuracy and loss."""

import json
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from transformers import AutoModelForMultipleChoice

from lit_hf.adapters import PeftMethod, apply_peft, keep_trainable, restore_frozen
from lit_hf.metrics import moves_only
from lit_hf.models import DType, fit_embeddings, load_config, load_model, load_tokenizer, model_inputs
from lit_hf.optim import SchedulerType, check_optimizer, configure_adamw
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.predictions import gather_by_index, log_dir, write_lines
from lit_hf.sharding import shard_model
from lit_hf.speed import CompileMode, checkpoint_activations, compile_model


class ChoiceScores(Metric):
    """Sums of each example's cross-entropy over its choices and of correct argmax choices, with the count.

    `update(logits, labels)` takes (batch, num_choices) logits and (batch,) label indices. States are float64 sums,
    so `compute()` (mean loss, accuracy) does not depend on how the set is split into batches or processes.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("nll", "correct", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        logits = logits.double()
        # Out-of-place: states made under trainer.validate's inference mode cannot be updated in place later.
        self.nll = self.nll + F.cross_entropy(logits, labels, reduction="sum")
        self.correct = self.correct + (logits.argmax(-1) == labels).sum().double()
        self.count = self.count + labels.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"loss": self.nll / self.count, "accuracy": self.correct / self.count}

    def _apply(self, fn: Callable[[Tensor], Tensor], *args: Any, **kwargs: Any) -> "ChoiceScores":
        return super()._apply(moves_only(fn), *args, **kwargs)  # float64 sums under bf16-true too


class MultipleChoiceTask(L.LightningModule):
    """Picks one of each example's choices, from batches of `input_ids`, `attention_mask` (and `token_type_ids`),
    each (batch, num_choices, seq_len), and `labels` (the correct choice's index).

    Logs `train/loss` every step; `val/loss` (mean cross-entropy over examples) and `val/accuracy` once per epoch,
    exact on any number of processes; the same under `test/`. `predict` writes `predictions.txt` (the chosen choice's
    text, one per line) and `predictions.jsonl` (index, chosen index and text, probabilities) in input order.

    Args:
        model_name_or_path: Hub id or local directory for `AutoModelForMultipleChoice.from_pretrained`.
        config_name: Config to use instead of the model's own (a hub id or directory).
        tokenizer_name: Tokenizer to use instead of the model's own; the data module follows it.
        revision: Hub branch, tag or commit of the model.
        cache_dir: Where downloaded models are stored (default: the Hugging Face cache).
        trust_remote_code: Allow model code from the hub. Only for repositories you trust.
        dtype: Weight dtype at load time; "auto" takes the checkpoint's. Mixed precision is `--trainer.precision`.
        from_scratch: Random weights for the config instead of pretrained ones (training from scratch).
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
        compile: `torch.compile` the model for training, evaluation and prediction; the first steps are slower
            while it compiles.
        compile_mode: The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels).
        gradient_checkpointing: Recompute each block's activations in the backward pass: less memory, more compute.
    """

    def __init__(
        self,
        model_name_or_path: ModelPath = "google-bert/bert-base-uncased",
        config_name: ModelPath | None = None,
        tokenizer_name: ModelPath | None = None,
        revision: str | None = None,
        cache_dir: LocalPath | None = None,
        trust_remote_code: bool = False,
        dtype: DType | None = None,
        from_scratch: bool = False,
        learning_rate: float = 2e-5,
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
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        self.tokenizer = load_tokenizer(tokenizer_name or model_name_or_path, **hub)
        config = load_config(config_name or model_name_or_path, **hub)
        config.pad_token_id = self.tokenizer.pad_token_id
        self.model = load_model(
            AutoModelForMultipleChoice, model_name_or_path, config=config, dtype=dtype, from_scratch=from_scratch, **hub
        )
        fit_embeddings(self.model, self.tokenizer)
        self.model = apply_peft(self.model, None, self.hparams, modules_to_save=["classifier"])  # the head trains
        checkpoint_activations(self.model, self.hparams)
        self.model.train()  # from_pretrained returns eval mode; Lightning switches modes around evaluation itself
        self.val_scores = ChoiceScores()
        self.test_scores = ChoiceScores()
        self.outputs: list[tuple[int, dict[str, Any]]] = []  # (index in the split, prediction row), CPU only

    def forward(self, **batch: Tensor) -> Any:
        return self.model(**batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.model(**model_inputs(batch)).loss  # mean cross-entropy over the batch's examples
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.val_scores, batch)

    def on_validation_epoch_end(self) -> None:
        self._end_epoch(self.val_scores, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(self.test_scores, batch)

    def on_test_epoch_end(self) -> None:
        self._end_epoch(self.test_scores, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(**model_inputs(batch, labels=False)).logits  # (batch, num_choices)
        probabilities = logits.float().softmax(-1).cpu()
        for index, choices, probs in zip(batch["index"].tolist(), batch["choices"], probabilities, strict=True):
            best = int(probs.argmax())
            row = {"index": index, "prediction": best, "choice": choices[best], "probabilities": probs.tolist()}
            self.outputs.append((index, row))

    def on_predict_epoch_end(self) -> None:
        rows = [row for _, row in gather_by_index(self.outputs)]  # collective: every rank calls it
        self.outputs = []
        folder = log_dir(self.trainer)
        if self.trainer.is_global_zero:
            write_lines(folder / "predictions.txt", [row["choice"].replace("\n", " ") for row in rows])
            write_lines(folder / "predictions.jsonl", [json.dumps(row, ensure_ascii=False) for row in rows])

    def configure_model(self) -> None:
        shard_model(self)  # only under --trainer.strategy=fsdp
        compile_model(self)  # after sharding, so FSDP runs compile the sharded blocks

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_trainable(self, checkpoint)  # with adapters, only what trains

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)

    def _evaluate(self, scores: ChoiceScores, batch: dict[str, Any]) -> None:
        logits = self.model(**model_inputs(batch, labels=False)).logits  # (batch, num_choices)
        scores.update(logits, batch["labels"])

    def _end_epoch(self, scores: ChoiceScores, prefix: str) -> None:
        if scores.update_count == 0:  # nothing was run (e.g. limit_val_batches=0)
            return
        values = scores.compute()  # reduced across processes by torchmetrics
        self.log_dict({f"{prefix}/{name}": value for name, value in values.items()}, prog_bar=True)
        scores.reset()
