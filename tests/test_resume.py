"""Exact resume: a fit of each shipped quickstart config (max_epochs set, as shipped) that is SIGKILLed, resumed with
--ckpt_path, stopped with Ctrl-C mid-epoch and resumed again logs what the uninterrupted fit logs, to the last bit.
A streamed fit resumed on two processes: test_streaming.py; kills while writing files: test_kill.py."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reference import logged, logged_values
from runs import one_thread

from lit_hf.cli import main

REPO = Path(__file__).resolve().parents[1]
SEED = 20  # of the steps at which the fits are stopped
EPOCH_STEPS = 4  # optimizer steps per epoch with the overrides below; the fits run 2 epochs
# Each quickstart shrunk to 4 optimizer steps an epoch (of its own batch size) and a small validation set; multiple
# choice accumulates the gradients of 2 batches per step.
QUICKSTARTS = {
    "clm": ["--data.max_train_samples=64", "--data.max_eval_samples=16"],
    "classification": ["--data.max_train_samples=128", "--data.max_eval_samples=32"],
    "translation": ["--data.max_train_samples=64", "--data.max_eval_samples=16"],
    "summarization": ["--data.max_train_samples=64", "--data.max_eval_samples=16"],
    "multiple_choice": [
        "--data.max_train_samples=128",
        "--data.max_eval_samples=16",
        "--trainer.accumulate_grad_batches=2",
    ],
    "image_classification": ["--data.max_train_samples=128", "--data.max_eval_samples=32"],
}
TAGS = ("train/loss", "train/lr", "val/loss")


def quickstart_args(name: str, root: Path, *extra: str) -> list[str]:
    """The quickstart as shipped (max_epochs set, so the learning-rate schedule spans its epochs), for 2 epochs,
    every step logged and last.ckpt written after every optimizer step by the config's own ModelCheckpoint."""
    return [
        "fit",
        f"--config={REPO / 'configs' / f'quickstart_{name}.yaml'}",
        *QUICKSTARTS[name],
        f"--data.data_cache_dir={root / 'cache'}",
        "--trainer.max_epochs=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks.init_args.every_n_train_steps=1",
        "--trainer.callbacks.init_args.save_top_k=0",  # last.ckpt only
        *extra,
    ]


@dataclass
class Chain:
    """One quickstart's fits: uninterrupted under `root/whole`; under `root/cut` SIGKILLed at the start of step
    `kill_at` (in epoch 0 or at its end), resumed and stopped with Ctrl-C at `interrupt_at` (mid-epoch 1), resumed
    to the end."""

    name: str
    root: Path
    kill_at: int = 0
    interrupt_at: int = 0
    child: subprocess.Popen | None = None
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(f"{SEED}-{self.name}")
        self.kill_at = rng.randint(1, EPOCH_STEPS)  # in epoch 0 or after its last step (seed 20: both happen)
        self.interrupt_at = rng.randint(EPOCH_STEPS + 1, 2 * EPOCH_STEPS - 1)  # mid-epoch 1

    @property
    def where(self) -> str:
        return f"{self.name}: SIGKILL at step {self.kill_at}, Ctrl-C at step {self.interrupt_at} (seed {SEED})"

    def start(self, stall_at: int, stop: str, *extra: str) -> None:
        """`python -m lit_hf fit` in its own process group (as a terminal runs it), waiting at step `stall_at`."""
        marker = self.root / stop
        probe = ["--trainer.callbacks+=stall_probe.StallAt", f"--trainer.callbacks.step={stall_at}"]
        command = [sys.executable, "-m", "lit_hf", *quickstart_args(self.name, self.root / "cut", *extra), *probe]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        log = open(marker.with_suffix(".log"), "w")
        command.append(f"--trainer.callbacks.marker={marker}")
        self.child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, stop: str, sig: signal.Signals, returncode: int) -> str:
        """Once the child waits at its step, sends `sig` to its process group; returns the child's output."""
        marker, child = self.root / stop, self.child
        deadline = time.monotonic() + 300
        while child.poll() is None and not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if marker.exists():
            os.killpg(child.pid, sig)
        child.wait(timeout=120)
        output = marker.with_suffix(".log").read_text()
        if child.returncode != returncode:
            self.failures.append(f"{stop}: exit status {child.returncode}, not {returncode}\n{output[-3000:]}")
        return output


def run_chains(chains: list[Chain]) -> None:
    """The stopped fits run as children, all families at once, while this process runs the uninterrupted fits and
    then the last resumes, one at a time (two cores stay busy). The children run on one thread, and so does this."""
    for chain in chains:
        (chain.root / "cut").mkdir(parents=True)
        chain.start(chain.kill_at, "kill")
    for chain in chains:
        main(quickstart_args(chain.name, chain.root / "whole"))
    for chain in chains:
        chain.stop("kill", signal.SIGKILL, -signal.SIGKILL)
        if not chain.failures:
            chain.start(chain.interrupt_at, "interrupt", "--ckpt_path=last")
    for chain in [chain for chain in chains if not chain.failures]:
        output = chain.stop("interrupt", signal.SIGINT, 1)  # Lightning's exit status after a KeyboardInterrupt
        if f"Restoring states from the checkpoint path at {chain.root / 'cut'}" not in output:
            chain.failures.append(f"the Ctrl-C'd fit did not resume\n{output[-3000:]}")
        if not chain.failures:
            main(quickstart_args(chain.name, chain.root / "cut", *last_resume(chain)))


def last_resume(chain: Chain) -> list[str]:
    """`--ckpt_path=last`, or for classification the path of the Ctrl-C'd fit's last.ckpt (both ways users resume)."""
    if chain.name != "classification":
        return ["--ckpt_path=last"]
    (path,) = (chain.root / "cut" / "lightning_logs").glob("*/version_1/checkpoints/last.ckpt")
    return [f"--ckpt_path={path}"]


def differences(want: Path, got: Path) -> dict[str, float]:
    """Largest absolute difference per tag over every value logged under `got` (a step done again after a resume
    counts each time it was logged); `got` must have logged the steps `want` logged."""
    diffs = {}
    for tag in TAGS:
        a, b = logged(want, tag), logged_values(got, tag)
        assert sorted(a) == sorted(b), (tag, sorted(a), sorted(b))
        diffs[tag] = max(abs(a[step] - value) for step in b for value in b[step])
    return diffs


@pytest.fixture(scope="module")
def chains(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Chain]:
    """The chains of the quickstarts this session's selected tests name, run together."""
    names = {item.callspec.params["name"] for item in request.session.items if item.module is request.module
             and hasattr(item, "callspec") and "name" in item.callspec.params}  # fmt: skip
    root = tmp_path_factory.mktemp("quickstarts")
    chains = {name: Chain(name, root / name) for name in QUICKSTARTS if name in names}
    try:
        with one_thread():  # as the children (OMP_NUM_THREADS=1)
            run_chains(list(chains.values()))
    finally:
        for chain in chains.values():
            if chain.child is not None and chain.child.poll() is None:
                os.killpg(chain.child.pid, signal.SIGKILL)
    return chains


@pytest.mark.parametrize("name", list(QUICKSTARTS))
def test_quickstart_sigkilled_and_interrupted_resumes_exactly(chains, name):
    chain = chains[name]
    assert not chain.failures, (chain.where, *chain.failures)
    cut = logged(chain.root / "cut", "train/loss")  # each run logged its own steps: every stop came after a checkpoint
    assert sorted(cut) == list(range(2 * EPOCH_STEPS)), chain.where
    assert differences(chain.root / "whole", chain.root / "cut") == dict.fromkeys(TAGS, 0.0), chain.where


def test_last_checkpoint_is_a_link_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """configs/quickstart_clm.yaml's `save_last: link`: `last.ckpt` is a link to the newest step checkpoint, the
    only full copy, and `--ckpt_path=last` resumes from it (2 steps an epoch, a checkpoint every 2 steps), in the
    run's folder named after task and model. Another model's `last` is not that run's (nothing to validate), and a
    run folder from before runs were named is named back to the user, not taken."""
    args = [
        "fit", f"--config={REPO / 'configs' / 'quickstart_clm.yaml'}", "--data.max_train_samples=32",
        "--data.max_eval_samples=16", f"--data.data_cache_dir={tmp_path / 'cache'}", "--trainer.max_epochs=2",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks.init_args.every_n_train_steps=2",
        "--trainer.log_every_n_steps=1",
    ]  # fmt: skip
    main(args)
    (last,) = tmp_path.rglob("last.ckpt")
    files = sorted(path.name for path in last.parent.iterdir())
    assert last.is_symlink() and files == ["epoch=1-step=4.ckpt", "last.ckpt"], files
    assert last.resolve() == last.parent / "epoch=1-step=4.ckpt"
    main([*args, "--trainer.max_epochs=3", "--ckpt_path=last"])
    runs = tmp_path / "lightning_logs" / "causal_lm-byte-gpt2"  # the config's task and model folder's name
    steps = [len(logged(runs / version, "train/loss")) for version in ("version_0", "version_1")]
    assert steps == [4, 2]  # the resumed fit trained steps 5 and 6 only: it went on from the link's step 4
    other = shutil.copytree(REPO / "configs" / "quickstart" / "byte-gpt2", tmp_path / "other-gpt2")
    validate = ["validate", *args[1:], f"--model.model_name_or_path={other}", "--ckpt_path=last"]
    assert refusal(validate, capsys).startswith(f"lit_hf: error: --ckpt_path=last: no last.ckpt under {tmp_path}")
    (tmp_path / "lightning_logs" / "version_0").mkdir()  # the resumed run's checkpoints, as an older run's
    (runs / "version_1" / "checkpoints").rename(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    assert "lightning_logs/version_0/checkpoints/last.ckpt is from a run folder of before" in refusal(validate, capsys)


def refusal(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one line a command refused with (status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]
