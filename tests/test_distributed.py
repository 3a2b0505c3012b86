"""Exact evaluation on several processes: DDP on CPU (gloo) must give the metrics of one process."""

import pytest
from reference import read_results, run_lit_hf
from runs import family_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_hf.data.sampling import EvalShardSampler
from lit_hf.errors import LitHFError
from lit_hf.predictions import gather_by_index


def launch(subcommand: str, devices: int, root, *args: str) -> None:
    run_lit_hf(
        subcommand,
        *family_args("causal_lm"),
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        "--trainer.strategy=ddp",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        *args,
    )


def last_scalars(root) -> dict[str, float]:
    (run_dir,) = {p.parent for p in root.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("val/")}


def test_validate_on_three_processes_equals_one(tmp_path, data_dir, causal_lm_dir):
    args = [
        f"--model.model_name_or_path={causal_lm_dir('gpt2')}",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        f"--data.validation_file={data_dir / 'wikitext/wikitext-2/valid.txt'}",
        "--data.block_size=64",
        "--data.max_eval_samples=40",
        "--data.eval_batch_size=4",
    ]  # 40 blocks: 14 + 13 + 13
    launch("validate", 1, tmp_path / "one", *args)
    launch("validate", 3, tmp_path / "three", *args)
    one, three = read_results(tmp_path / "one"), read_results(tmp_path / "three")
    assert set(one) == {"val/loss", "val/ppl", "val/accuracy", "val/scored_tokens"} == set(three)
    for key in one:
        assert three[key] == pytest.approx(one[key], rel=1e-6), key


def test_validation_inside_fit_on_two_processes_equals_one(tmp_path, data_dir, causal_lm_dir):
    args = [
        f"--model.model_name_or_path={causal_lm_dir('opt')}",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=64",
        "--data.validation_split_percentage=10",
        "--data.eval_batch_size=4",
        "--model.optim.learning_rate=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.num_sanity_val_steps=0",
    ]
    launch("fit", 1, tmp_path / "one", *args)  # learning rate 0: the weights stay, so both validate one model
    launch("fit", 2, tmp_path / "two", *args)
    one, two = last_scalars(tmp_path / "one"), last_scalars(tmp_path / "two")
    assert set(one) == {"val/loss", "val/ppl", "val/accuracy", "val/scored_tokens"} == set(two)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-6), key


def test_shards_cover_the_set_once_and_gather_restores_order() -> None:
    order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]  # e.g. sorted by length; 10 examples on 3 processes
    shards = [list(EvalShardSampler(range(10), 3, rank, order)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]
    rows = [(i, f"text {i}") for shard in shards for i in shard]
    assert gather_by_index(rows) == [(i, f"text {i}") for i in range(10)]  # one process: sorting only
    with pytest.raises(LitHFError, match="1 examples were evaluated on more than one process"):
        gather_by_index([*rows, (4, "again")])
