"""Typed option groups every task shares: the hub, the optimizer, LoRA adapters, speed and generation."""

import dataclasses
from typing import Any, Literal

from lit_hf.errors import ConfigError, check_positive
from lit_hf.paths import LocalPath, ModelPath
from lit_hf.quantization.plugin import CalibratedQuantizer, Quantizer

SchedulerType = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]

# torch.compile's modes (torch._inductor.list_mode_options(); torch 2.13 adds "lite", which older torch lacks).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclasses.dataclass(frozen=True)
class HubOptions:
    """Where the model's files come from, besides `model_name_or_path`. The CLI hands the task's group to the data
    module too, so both load the same tokenizer (or image processor) and config."""

    config_name: ModelPath | None = None
    """Config to use instead of the model's own (a hub id or directory)."""
    tokenizer_name: ModelPath | None = None
    """Tokenizer to use instead of the model's own (text tasks); the data module follows it."""
    image_processor_name: ModelPath | None = None
    """Image processor to use instead of the model's own (image tasks); the data module follows it."""
    revision: str | None = None
    """Hub branch, tag or commit of the model, its config and its tokenizer."""
    cache_dir: LocalPath | None = None
    """Where downloaded models are stored (default: the Hugging Face cache)."""
    trust_remote_code: bool = False
    """Allow model code from the hub. Only for repositories you trust."""

    def loading(self) -> dict[str, Any]:
        """The keyword arguments every `from_pretrained` of the model's files takes."""
        return {"revision": self.revision, "cache_dir": self.cache_dir, "trust_remote_code": self.trust_remote_code}


@dataclasses.dataclass(frozen=True)
class OptimOptions:
    """AdamW with decoupled weight decay on matrices, and a learning-rate schedule stepped every optimizer step."""

    learning_rate: float = 5e-5
    """Peak AdamW learning rate, reached at the end of warmup."""
    weight_decay: float = 0.0
    """Decoupled weight decay for matrices; biases and norm weights get none."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.0
    """Fraction of all optimizer steps spent warming up linearly from zero."""
    warmup_steps: int = 0
    """Warmup length in optimizer steps (instead of warmup_ratio)."""
    lr_scheduler_type: SchedulerType = "linear"
    """Schedule after warmup, as `transformers.get_scheduler` names it."""

    def __post_init__(self) -> None:
        # torch's AdamW refuses a negative rate only when the fit starts, after its log folder is made.
        for name in ("learning_rate", "weight_decay", "adam_epsilon"):
            if not getattr(self, name) >= 0:  # NaN fails this too
                raise ConfigError(f"optim.{name} must be 0 or more, got {getattr(self, name)}.")
        if self.warmup_ratio and self.warmup_steps:
            raise ConfigError("Set either optim.warmup_ratio or optim.warmup_steps, not both.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}.")


@dataclasses.dataclass(frozen=True)
class LoraOptions:
    """LoRA adapters through PEFT: only they (and the task's head) train, and checkpoints hold only what trains."""

    r: int = 8
    """Rank of each adapter."""
    alpha: float = 16.0
    """Scale numerator: the adapter's update is multiplied by alpha / r."""
    dropout: float = 0.05
    """Dropout on the input of the adapter branch."""
    target_modules: list[str] | None = None
    """Module names to adapt, e.g. ["c_attn"]. Default: PEFT's choice for the architecture."""
    merge: bool = False
    """The export at the end of fit writes the adapters merged into full weights instead of the adapter directory."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be a positive rank, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}.")
        if self.target_modules == []:
            raise ConfigError("lora.target_modules is empty; leave it unset for PEFT's default for the architecture.")


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    """Compute against memory and time: `torch.compile` and gradient (activation) checkpointing."""

    compile: bool = False
    """`torch.compile` the model for training and evaluation (`generate` runs eagerly); the first steps are slower
    while it compiles."""
    compile_mode: CompileMode = "default"
    """The `torch.compile` mode ("reduce-overhead": CUDA graphs; "max-autotune": tuned kernels)."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, more compute."""

    def __post_init__(self) -> None:
        if self.compile_mode != "default" and not self.compile:  # it would silently do nothing
            raise ConfigError(f"speed.compile_mode={self.compile_mode!r} needs speed.compile=true.")


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """`transformers.GenerationConfig` options, same names. Each one left unset comes from the model's own
    generation config; the export writes the ones set into its `generation_config.json`."""

    max_new_tokens: int | None = None
    """Most tokens generated per input. Translation and summarization default to the data's val_max_target_length
    (linked by the CLI)."""
    num_beams: int | None = None
    """Beam width (1: greedy or plain sampling)."""
    do_sample: bool | None = None
    """Sample instead of greedy or beam search (reproducible with `seed_everything`)."""
    temperature: float | None = None
    """Sampling temperature."""
    top_k: int | None = None
    """Sample only from the k most likely tokens (0: no top-k filtering)."""
    top_p: float | None = None
    """Sample only from the smallest set of tokens whose probability reaches top_p."""
    repetition_penalty: float | None = None
    """Penalty (> 1) on tokens already in the input or the output."""
    no_repeat_ngram_size: int | None = None
    """No n-gram of this size occurs twice in an output."""
    length_penalty: float | None = None
    """Beam scores are divided by length ** length_penalty (> 0 favours longer outputs)."""
    early_stopping: bool | None = None
    """Beam search stops once num_beams finished candidates exist."""

    def __post_init__(self) -> None:
        check_positive(**{f"generation.{k}": getattr(self, k) for k in ("max_new_tokens", "num_beams")})
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"generation.top_k must be 0 (no top-k filtering) or more, got {self.top_k}.")
        for name in ("temperature", "top_p", "repetition_penalty"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"generation.{name} must be positive, got {getattr(self, name)}.")
        if self.top_p is not None and self.top_p > 1:
            raise ConfigError(f"generation.top_p is a probability mass in (0, 1], got {self.top_p}.")

    def given(self) -> dict[str, Any]:
        """The options set, by their `GenerationConfig` names."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


# Task options before the groups (lit_hf up to 57acf82) -> where they are now; docs/migration.md lists the same.
MOVED = {
    **{name: f"hub.{name}" for name in ("config_name", "tokenizer_name", "image_processor_name")},
    **{name: f"hub.{name}" for name in ("revision", "cache_dir", "trust_remote_code")},
    **{f.name: f"optim.{f.name}" for f in dataclasses.fields(OptimOptions)},
    "peft": "lora",
    **{f"lora_{name}": f"lora.{name}" for name in ("r", "alpha", "dropout", "target_modules")},
    "merge_adapters": "lora.merge",
    **{f.name: f"speed.{f.name}" for f in dataclasses.fields(SpeedOptions)},
    **{f.name: f"generation.{f.name}" for f in dataclasses.fields(GenerationOptions)},
}

# Data module options the CLI linked before the groups -> what it links now (from --model).
MOVED_DATA = {
    "tokenizer_name_or_path": "hub.tokenizer_name",
    "config_name_or_path": "hub.config_name",
    "image_processor_name_or_path": "hub.image_processor_name",
}


def grouped_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A task's hyperparameters as lit_hf saved them before the groups (flat: `learning_rate`, `peft`, `lora_r`)
    in today's form (`optim: {learning_rate}`, `lora: {r}` or None). Grouped ones come back unchanged."""
    out = {key: value for key, value in hparams.items() if key not in MOVED}
    for old, new in MOVED.items():
        group, _, name = new.partition(".")
        if old in hparams and name and (group != "lora" or hparams.get("peft")):  # lora_* without peft: unused
            out.setdefault(group, {})[name] = hparams[old]
    if "peft" in hparams and not hparams["peft"]:
        out["lora"] = None
    return out


def plain_hparams(module: Any) -> None:
    """The groups in a module's saved hyperparameters as plain dicts, as LightningCLI saves them: checkpoints then
    load with `torch.load(weights_only=True)` and hparams.yaml holds no Python objects."""
    for hparams in (module._hparams, module._hparams_initial):
        for key, value in hparams.items():
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                hparams[key] = {name: _plain(field) for name, field in dataclasses.asdict(value).items()}


def _plain(value: Any) -> Any:
    """An object in a group (a quantizer plug-in) as its class path and plain attributes, as jsonargparse writes it."""
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    kind = type(value)
    init_args = {k: v for k, v in vars(value).items() if isinstance(v, str | int | float | bool | list) or v is None}
    return {"class_path": f"{kind.__module__}.{kind.__qualname__}", "init_args": init_args}


QuantMethod = Literal[
    "int8_weight_only", "int8_dynamic_activation_int8_weight", "intx_weight_only", "float8_weight_only"
]


@dataclasses.dataclass(frozen=True)
class QuantizationOptions:
    """Post-training quantization (torchao) of the model `validate`, `test`, `predict` and fit's validation run.
    `fit` trains in full precision; each of its validations scores a quantized copy of the current weights."""

    method: QuantMethod = "int8_weight_only"
    """int8_weight_only (per-channel, or per-group with group_size), int8_dynamic_activation_int8_weight (W8A8,
    activations quantized per token at run time), intx_weight_only (`bits` wide, per channel or per group),
    float8_weight_only (e4m3, per channel)."""
    bits: int | None = None
    """intx_weight_only's weight width, 1 to 8."""
    group_size: int | None = None
    """Weights per scale along the input dimension (int8_weight_only, intx_weight_only); None: one scale per output
    channel. Layers whose input size it does not divide stay in full precision (the coverage report lists them)."""
    compare_full_precision: bool = False
    """Score the full-precision model on the same batches too: `val_full/*` beside the quantized `val/*`, and
    `val_delta/*` = quantized - full precision."""
    quantizer: Quantizer | None = None
    """Your own quantizer instead of `method` (`lit_hf.quantization.plugin.Quantizer`): a class path, its options
    under `init_args`, e.g. lit_hf.quantization.plugin.WeightFakeQuantizer."""
    calibration_batches: int | None = None
    """Run the first K batches (of eval_batch_size examples) of `calibration_split` through the quantizer's
    observers before it converts the model (a `CalibratedQuantizer`, e.g. lit_hf.quantization.plugin.FakeQuantizer);
    N processes share those K batches, whole batches each. validate and test only."""
    calibration_split: str = "train"
    """The split calibration reads (its cached examples, in file order)."""

    def __post_init__(self) -> None:
        if (self.bits is None) == (self.method == "intx_weight_only"):
            raise ConfigError(f"quantization.bits is intx_weight_only's, and it needs them; method={self.method}.")
        if self.bits is not None and not 1 <= self.bits <= 8:
            raise ConfigError(f"quantization.bits must be 1 to 8, got {self.bits}.")
        if self.group_size is not None and self.method not in ("int8_weight_only", "intx_weight_only"):
            raise ConfigError(f"quantization.group_size is for the weight-only int methods, not {self.method}.")
        check_positive(**{"quantization.group_size": self.group_size})
        if self.quantizer is not None and (self.bits or self.group_size or self.method != "int8_weight_only"):
            raise ConfigError("quantization.quantizer replaces method, bits and group_size; leave them unset.")
        check_positive(**{"quantization.calibration_batches": self.calibration_batches})
        if self.calibration_batches is not None and not isinstance(self.quantizer, CalibratedQuantizer):
            raise ConfigError(
                "quantization.calibration_batches feeds a quantizer plug-in's observers (prepare, observe, "
                "synchronize, calibration); name one in quantization.quantizer, e.g. "
                "lit_hf.quantization.plugin.FakeQuantizer."
            )
