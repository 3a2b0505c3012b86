"""Scale-out on CPU processes: `strategy=dp`, two torchrun "nodes" on loopback, and a SLURM job's environment."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from reference import REPO, read_results, run_lit_hf
from runs import cpu_run, family_args

from lit_hf.cli import main

PROBE = "--trainer.callbacks+=cluster_probe.ClusterProbe"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clm_args(root: Path, model: Path, data_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        *family_args("causal_lm", model), *cpu_run(root, cache), f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=64", "--data.validation_split_percentage=10", "--data.batch_size=4",
        "--data.eval_batch_size=4", "--trainer.enable_model_summary=false", *extra,
    ]  # fmt: skip


def probe_env() -> dict[str, str]:
    """One thread per rank; the repository and tests/ (for the probe callback) importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    try:
        outs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-4000:]


def probes(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank-*.json"))]


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, data_dir, causal_lm_dir):
    """Factory: root -> the arguments of a tiny GPT-2 `validate` into root, sharing one cache; and the 1-process
    results of those arguments, computed once for the tests that compare with them."""
    cache = tmp_path_factory.mktemp("cache")

    def args(root: Path) -> list[str]:
        return clm_args(root, causal_lm_dir("gpt2"), data_dir, cache)

    one = tmp_path_factory.mktemp("one")
    main(["validate", *args(one)])
    return args, read_results(one)


def test_strategy_dp_runs_as_ddp_and_says_why(tmp_path, gpt2_run):
    args, one = gpt2_run
    done = run_lit_hf("validate", *args(tmp_path / "dp"), "--trainer.strategy=dp", "--trainer.devices=2")
    assert done.stdout.count("--trainer.strategy=dp runs as ddp over the same devices") == 1  # rank 0 only
    dp = read_results(tmp_path / "dp")
    assert set(one) == {"val/loss", "val/ppl", "val/accuracy", "val/scored_tokens"} == set(dp)
    for key in one:
        assert dp[key] == pytest.approx(one[key], rel=1e-6), key


def torchrun_two_nodes(subcommand: str, root: Path, args_of_node, *extra: str) -> None:
    """Two torchrun agents on 127.0.0.1 as two nodes of one process each (node_rank 0 and 1)."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={node}",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                "-m",
                "lit_hf",
                subcommand,
                *args_of_node(node),
                "--trainer.num_nodes=2",
                "--trainer.devices=1",
                "--trainer.strategy=ddp",
                PROBE,
                f"--trainer.callbacks.folder={root / f'probe-{subcommand}'}",
                *extra,
            ],
            env=probe_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    wait_all(procs)


def test_fit_then_validate_on_two_torchrun_nodes_equals_one_process(tmp_path, data_dir, causal_lm_dir):
    model = causal_lm_dir("opt")

    def node_args(node: int) -> list[str]:  # each "node" its own cache folder, as on node-local disks
        return clm_args(tmp_path / "nodes", model, data_dir, tmp_path / f"cache-node{node}")

    extra = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.num_sanity_val_steps=0"]
    torchrun_two_nodes("fit", tmp_path, node_args, "--model.optim.learning_rate=1e-3", *extra)
    facts = probes(tmp_path / "probe-fit")
    assert [(f["environment"], f["node_rank"], f["world_size"]) for f in facts] == [
        ("TorchElasticEnvironment", 0, 2),
        ("TorchElasticEnvironment", 1, 2),
    ]
    keys = {n: sorted((tmp_path / f"cache-node{n}").rglob("lit_hf_key.json")) for n in (0, 1)}
    assert len(keys[0]) == len(keys[1]) == 2  # train and validation, tokenized once on each node
    stamps = [p.stat().st_mtime_ns for n in (0, 1) for p in keys[n]]
    (checkpoint,) = (tmp_path / "nodes").rglob("*.ckpt")
    torchrun_two_nodes("validate", tmp_path, node_args, f"--ckpt_path={checkpoint}")
    assert [p.stat().st_mtime_ns for n in (0, 1) for p in keys[n]] == stamps  # validate tokenized nothing again
    main(
        [
            "validate",
            *clm_args(tmp_path / "one", model, data_dir, tmp_path / "cache-node0"),
            f"--ckpt_path={checkpoint}",
        ]
    )
    (two_nodes,) = (tmp_path / "nodes" / "lightning_logs").glob("*/version_1")
    two, one = read_results(two_nodes), read_results(tmp_path / "one")
    assert set(one) == {"val/loss", "val/ppl", "val/accuracy", "val/scored_tokens"} == set(two)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-6), key


def slurm_rank_env(rank: int, port: int) -> dict[str, str]:
    """What `srun` sets for task `rank` of a 2-task job on one node (lightning/fabric/plugins/environments/slurm.py
    reads these); `srun` itself need not exist."""
    env = probe_env()
    env.pop("MASTER_ADDR", None)  # SLURMEnvironment derives it from the node list
    return env | {
        "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "lit_hf",
        "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port),
    }  # fmt: skip


def test_a_slurm_jobs_ranks_use_lightnings_slurm_environment(tmp_path, gpt2_run):
    args, one = gpt2_run
    port = free_port()
    command = [sys.executable, "-m", "lit_hf", "validate", *args(tmp_path / "slurm"), "--trainer.devices=2"]
    command += ["--trainer.strategy=ddp"]
    command += [PROBE, f"--trainer.callbacks.folder={tmp_path / 'probe'}"]
    procs = [
        subprocess.Popen(
            command, env=slurm_rank_env(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    wait_all(procs)
    facts = probes(tmp_path / "probe")
    assert [(f["environment"], f["global_rank"], f["world_size"]) for f in facts] == [
        ("SLURMEnvironment", 0, 2),
        ("SLURMEnvironment", 1, 2),
    ]
    two = read_results(tmp_path / "slurm")
    assert set(two) == set(one)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-6), key
