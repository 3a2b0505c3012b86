"""Precision and CPU threads that fit the machine: bfloat16 on a CPU only where it computes in it natively, and the
cores this process may use shared among the processes on its node."""

import os
import platform
from pathlib import Path

import torch

from lit_hf.errors import ConfigError, say

# CPU features that compute bfloat16 natively (/proc/cpuinfo names): x86 AVX512-BF16 and AMX-BF16, the Arm BF16
# extension. Without one, PyTorch converts every bfloat16 operand to float32 and back: on an AVX2-only CPU the
# bf16-mixed GPT-2 fine-tune ran 4.8x slower than float32 (45 against 217 tokens/s, issue 23).
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}
BF16_PRECISIONS = {"bf16", "bf16-mixed", "bf16-true"}
STRICT_PRECISION = "LIT_HF_STRICT_PRECISION"  # set to 1: refuse bf16 on such a CPU rather than run float32


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature names (x86 `flags`, Arm `Features`), or None where the system does not list them."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def native_bf16(flags: set[str] | None) -> bool:
    """Whether the CPU with these features computes bfloat16 natively. Where the system lists none (macOS), torch's
    own x86 checks (AVX512-BF16, AMX) decide, and other CPUs (Apple silicon) are taken at their word."""
    if flags is not None:
        return bool(flags & NATIVE_BF16)
    if platform.machine() in ("x86_64", "AMD64"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def strict_precision() -> bool:
    """Whether `LIT_HF_STRICT_PRECISION` is set (to anything but 0)."""
    return os.environ.get(STRICT_PRECISION, "0").strip() not in ("", "0")


def cpu_precision(precision: str, flags: set[str] | None, strict: bool) -> str:
    """The precision a CPU run uses: `precision`, except bfloat16 without native support, which runs as 32-true
    with one line saying why, or (`strict`) is refused."""
    if precision not in BF16_PRECISIONS or native_bf16(flags):
        return precision
    why = "this CPU has no native bfloat16 (no avx512_bf16, amx_bf16 or bf16 among its features in /proc/cpuinfo)"
    if strict:
        raise ConfigError(
            f"--trainer.precision={precision}: {why}, so it would run several times slower than float32; "
            f"give --trainer.precision=32-true, or unset {STRICT_PRECISION} to let lit_hf run float32 itself."
        )
    say(f"--trainer.precision={precision} runs as 32-true: {why}, and emulated bfloat16 is several times slower.")
    return "32-true"


def processes_on_node(accelerator: object, devices: object) -> int:
    """How many processes of the run share this node: the launcher's `LOCAL_WORLD_SIZE` (torchrun), else
    `--trainer.devices` (a count, a list, or "auto"/-1: one CPU process, or every GPU)."""
    if os.environ.get("LOCAL_WORLD_SIZE", "").isdigit():
        return int(os.environ["LOCAL_WORLD_SIZE"])
    if isinstance(devices, (list, tuple)):
        return max(1, len(devices))
    text = str(devices).strip()
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(text)
    gpus = torch.cuda.device_count() if accelerator in (None, "auto", "gpu", "cuda") else 0
    return max(1, gpus)


def set_cpu_threads(processes: int) -> int | None:
    """Each process computes with the cores it may use (`os.sched_getaffinity`) divided among the `processes` on the
    node, unless `OMP_NUM_THREADS` says otherwise; exported as `OMP_NUM_THREADS` so the processes Lightning starts
    and `datasets` workers agree. Returns the number set, None where the user's `OMP_NUM_THREADS` decides."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, processes))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
