"""`--trainer.strategy=fsdp` on 2 CPU processes (gloo): it trains, evaluates like 1 process, exports full weights."""

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from reference import read_results, run_lit_hf
from runs import cpu_run, family_args
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from transformers import AutoModelForCausalLM

from lit_hf.cli import main
from lit_hf.data.sampling import EvalShardSampler
from lit_hf.optim import param_groups
from lit_hf.sharding import block_classes


def clm_args(root: Path, model: Path, data_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        *family_args("causal_lm", model),
        *cpu_run(root, cache),
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=64",
        "--data.validation_split_percentage=10",
        "--data.max_eval_samples=9",
        "--data.batch_size=4",
        "--data.eval_batch_size=4",
        "--trainer.enable_model_summary=false",
        *extra,
    ]  # fmt: skip  9 blocks on 2 processes: 5 + 4, which round-robin batches of 4 would run as 2 + 1


def test_fsdp_on_two_cpu_processes_trains_evaluates_like_one_and_exports_full_weights(
    tmp_path, data_dir, causal_lm_dir
):
    model, cache = causal_lm_dir("gpt2"), tmp_path / "cache"
    main(["validate", *clm_args(tmp_path / "before", model, data_dir, cache)])
    fit = ["--trainer.devices=2", "--trainer.strategy=fsdp", "--trainer.max_epochs=1"]
    fit += ["--trainer.limit_train_batches=6", "--model.optim.learning_rate=1e-3", "--model.optim.weight_decay=0.1"]
    done = run_lit_hf("fit", *clm_args(tmp_path / "fsdp", model, data_dir, cache, *fit))
    assert "--trainer.strategy=fsdp runs as lit_hf.sharding.ShardedStrategy" in done.stdout
    fitted = read_results(tmp_path / "fsdp")
    assert fitted["val/loss"] < read_results(tmp_path / "before")["val/loss"] - 0.01  # it trained
    (run_dir,) = (tmp_path / "fsdp" / "lightning_logs").glob("*/version_0")
    (checkpoint,) = (run_dir / "checkpoints").iterdir()  # a folder: one shard file per process
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    dcp_to_torch_save(checkpoint, tmp_path / "consolidated.pt")  # PyTorch's own gathering of the shards
    shards = torch.load(tmp_path / "consolidated.pt", weights_only=False)["state_dict"]
    export = load_file(run_dir / "huggingface" / "model.safetensors")
    assert len(export) > 20 and all(torch.equal(shards[f"model.{k}"], v) for k, v in export.items())
    assert not torch.equal(export["transformer.h.0.attn.c_attn.weight"], original_weight(model))
    main(["validate", *clm_args(tmp_path / "one", run_dir / "huggingface", data_dir, cache)])
    one = read_results(tmp_path / "one")
    again = ["--trainer.devices=2", "--trainer.strategy=fsdp", f"--ckpt_path={checkpoint}"]
    run_lit_hf("validate", *clm_args(tmp_path / "resumed", model, data_dir, cache, *again))
    resumed = read_results(tmp_path / "resumed")
    assert set(one) == {"val/loss", "val/ppl", "val/accuracy", "val/scored_tokens"}
    for key in one:
        assert fitted[key] == pytest.approx(one[key], rel=1e-6), key
        assert resumed[key] == pytest.approx(one[key], rel=1e-6), key


def original_weight(model_dir: Path) -> torch.Tensor:
    return AutoModelForCausalLM.from_pretrained(model_dir).transformer.h[0].attn.c_attn.weight.detach()


def test_every_process_runs_the_same_number_of_batches_and_sees_each_row_once() -> None:
    for size, processes, batch in [(9, 2, 4), (10, 3, 4), (40, 3, 4), (7, 2, 2)]:
        shards = [list(EvalShardSampler(range(size), processes, r, batch_size=batch)) for r in range(processes)]
        assert len({len(s) for s in shards}) == 1, (size, processes, batch)
        rows = [i for s in shards for b in s for i in b]
        assert sorted(rows) == list(range(size)) and max(len(b) for s in shards for b in s) <= batch


def test_blocks_and_decay_groups_of_a_sharded_model(causal_lm_dir) -> None:
    from torch.distributed.fsdp import fully_shard

    model = AutoModelForCausalLM.from_pretrained(causal_lm_dir("opt"))
    assert {c.__name__ for c in block_classes(model)} == {"OPTDecoderLayer"}
    before = [len(g["params"]) for g in param_groups(model, 0.1)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        for layer in model.model.decoder.layers:
            fully_shard(layer)
        fully_shard(model)
        assert [len(g["params"]) for g in param_groups(model, 0.1)] == before  # DTensors keep their full shapes
    finally:
        dist.destroy_process_group()


def test_t5_validate_under_fsdp_generates_like_one_process(tmp_path, data_dir, tiny_t5_dir) -> None:
    # 10 pairs on 2 processes: 5 + 5 in 2 batches each; generate runs until every process is done (synced_gpus)
    args = [
        *family_args("translation", tiny_t5_dir),
        f"--data.validation_file={data_dir / 'wmt16/sample.json'}",
        "--data.source_lang=en", "--data.target_lang=ro", "--data.max_target_length=12", "--data.eval_batch_size=4",
        f"--data.data_cache_dir={tmp_path / 'cache'}", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    main(["validate", *args, f"--trainer.default_root_dir={tmp_path / 'one'}"])
    sharded = ["--trainer.devices=2", "--trainer.strategy=fsdp", f"--trainer.default_root_dir={tmp_path / 'fsdp'}"]
    run_lit_hf("validate", *args, *sharded)
    one, fsdp = read_results(tmp_path / "one"), read_results(tmp_path / "fsdp")
    assert set(one) == {"val/loss", "val/bleu", "val/chrf", "val/gen_len"} == set(fsdp)
    for key in one:
        assert fsdp[key] == pytest.approx(one[key], rel=1e-6), key
    (mine,) = (tmp_path / "fsdp").rglob("val_predictions.txt")
    (theirs,) = (tmp_path / "one").rglob("val_predictions.txt")
    assert mine.read_text() == theirs.read_text()  # the same hypotheses, in dataset order
