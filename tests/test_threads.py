"""CPU threads per process: the cores the process may use, divided among the processes on its node, unless
OMP_NUM_THREADS says otherwise."""

import os
from pathlib import Path

import pytest
import torch

from lit_hf.cli import main
from lit_hf.machine import processes_on_node, set_cpu_threads

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch):
    """This process's torch threads and OMP_NUM_THREADS, put back after the test."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "processes", "expected"), [(8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 4, 1)])
def test_threads_are_the_usable_cores_shared_among_the_processes(monkeypatch, threads, cores, processes, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))  # e.g. `taskset -c 0-7`
    assert set_cpu_threads(processes) == expected
    assert torch.get_num_threads() == expected and os.environ["OMP_NUM_THREADS"] == str(expected)  # for children


def test_omp_num_threads_decides_when_set(monkeypatch, threads):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert set_cpu_threads(1) is None and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "3"


def test_processes_on_node_follow_devices_and_the_launcher(monkeypatch, threads):
    assert [processes_on_node("cpu", d) for d in (1, "2", [0, 1, 2], "0,1", "auto", -1)] == [1, 2, 3, 2, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun says how many it started here
    assert processes_on_node("cpu", 1) == 4


def test_a_cli_run_sets_them_from_its_devices(monkeypatch, threads, tmp_path):
    """`--trainer.devices=2` on 4 usable cores: each of the 2 processes gets 2 threads (the command stops at its
    parse error after the trainer options were read, so nothing runs)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr("lit_hf.cli.lightning.checks.check_output_dirs", stop)
    with pytest.raises(Stop):
        main(
            [
                "fit",
                "--config=configs/quickstart_clm.yaml",
                "--trainer.devices=2",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"


class Stop(Exception):
    """Raised in place of the first check after the threads are set."""


def stop(trainer) -> None:
    raise Stop
