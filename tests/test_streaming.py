"""Streamed training (--data.streaming=true): the blocks of the map-style path, each process its rows in the same
number of batches, exact resume, memory independent of the corpus, and one line when the hub is unreachable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import logged, reference_blocks, run_lit_hf
from runs import cpu_run, family_args

import lit_hf.data.causal_lm_inputs as inputs
import lit_hf.data.causal_lm_stream as block_stream
from lit_hf.cli import main
from lit_hf.data import LanguageModelingDataModule
from lit_hf.errors import ConfigError
from lit_hf.options import HubOptions

REPO = Path(__file__).resolve().parents[1]


def data_module(tmp_path: Path, tokenizer_dir: Path, **options) -> LanguageModelingDataModule:
    cache = str(tmp_path / "cache")
    options = {"validation_split_percentage": 0, "data_cache_dir": cache, **options}
    dm = LanguageModelingDataModule(hub=HubOptions(tokenizer_name=str(tokenizer_dir)), **options)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def streamed(dm: LanguageModelingDataModule, key: str = "input_ids") -> np.ndarray:
    """Every block of one pass over the training loader, in order: (blocks, block_size)."""
    return np.concatenate([batch[key].numpy() for batch in dm.train_dataloader()])


@pytest.mark.parametrize("packing", [False, True])
def test_streamed_blocks_equal_the_map_style_blocks(
    tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, monkeypatch, packing
):
    """A WikiText file (250 lines) streamed in batches of 4: the blocks are the cached split's in its order (and,
    unpacked, the plain per-line reference), all but the last partial batch; no training data is cached. The
    tokenizer gets 7 rows a call, so blocks continue across many calls."""
    monkeypatch.setattr(inputs, "BATCH_ROWS", 7)
    text = data_dir / "wikitext/wiki_00"
    options = {"train_file": str(text), "block_size": 32, "batch_size": 4, "packing": packing}
    options |= {"add_eos_between_documents": packing}
    stream = data_module(tmp_path / "stream", causal_lm_dir("gpt2"), streaming=True, **options)
    cached = data_module(tmp_path / "map", causal_lm_dir("gpt2"), **options).datasets["train"]
    assert not any((tmp_path / "stream").rglob("*.arrow"))  # the stream wrote nothing
    got, want = streamed(stream), np.stack(cached["input_ids"])
    assert len(got) == len(want) // 4 * 4 and len(got) > 400
    np.testing.assert_array_equal(got, want[: len(got)])
    if packing:
        np.testing.assert_array_equal(streamed(stream, "position_ids"), np.stack(cached["position_ids"])[: len(got)])
    else:
        np.testing.assert_array_equal(got, reference_blocks(text, gpt2_tokenizer, 32)[: len(got)])


def test_worker_reads_the_same_blocks_ahead(tmp_path, data_dir, causal_lm_dir):
    """num_workers=2: one worker process reads the stream (a second would read the same rows again), same blocks."""
    options = {"train_file": str(data_dir / "wikitext/wiki_00"), "block_size": 32, "streaming": True}
    main_process = streamed(data_module(tmp_path, causal_lm_dir("gpt2"), **options))
    worker = data_module(tmp_path, causal_lm_dir("gpt2"), num_workers=2, **options)
    assert worker.train_dataloader().num_workers == 1
    np.testing.assert_array_equal(streamed(worker), main_process)


def test_shuffle_buffer_is_a_seeded_permutation():
    items = list(range(100))
    once, again = (list(block_stream.shuffled(iter(items), 10, np.random.default_rng(3))) for _ in "ab")
    other_seed = list(block_stream.shuffled(iter(items), 10, np.random.default_rng(4)))
    assert sorted(once) == items and once == again and once != items and other_seed != once
    assert all(once.index(i) >= i - 10 for i in items)  # nothing comes out before it entered the buffer of 10


def unequal_rows(path: Path, wikitext: Path, n: int = 24) -> list[str]:
    """Alternating long (a WikiText paragraph) and short rows: with 2 processes, process 0 holds far more text."""
    paragraphs = [line for line in wikitext.read_text(encoding="utf-8").splitlines(keepends=True) if len(line) > 200]
    rows = [row for paragraph in paragraphs[:n] for row in (paragraph, f" row {len(paragraph)} is short.\n")]
    path.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    return rows


def test_two_processes_take_disjoint_rows_in_equal_batches(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    """DDP over gloo, process 0 holding 3x the text: process r streams rows r, r + 2, ... (one file is one shard, so
    `split_dataset_by_node` keeps every 2nd row) and both end each epoch at the short share's last full batch.
    Reference: each share tokenized row by row, concatenated and cut; two epochs, no shuffle, then max_steps."""
    rows = unequal_rows(tmp_path / "rows.jsonl", data_dir / "wikitext/wikitext-2/valid.txt")
    shares = [[i for row in rows[r::2] for i in gpt2_tokenizer(row)["input_ids"]] for r in (0, 1)]
    block, batch = 16, 2
    steps = min(len(share) // block // batch for share in shares)  # per epoch
    assert len(shares[0]) // block // batch > 3 * steps > 0
    args = [
        "fit",
        *family_args("causal_lm", causal_lm_dir("gpt2")),
        f"--data.train_file={tmp_path / 'rows.jsonl'}",
        "--data.streaming=true",
        "--data.validation_split_percentage=0",
        f"--data.block_size={block}",
        f"--data.batch_size={batch}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        f"--trainer.max_steps={2 * steps + 1}",  # into a third epoch
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=batch_probe.BatchProbe",
        f"--trainer.callbacks.folder={tmp_path / 'batches'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run([sys.executable, "-m", "lit_hf", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    for r, share in enumerate(shares):
        got = np.load(tmp_path / "batches" / f"rank-{r}.npz")
        epoch = np.array(share[: steps * batch * block]).reshape(steps, batch, block)
        np.testing.assert_array_equal(got["input_ids"], np.concatenate([epoch, epoch, epoch[:1]]))
        np.testing.assert_array_equal(got["epoch"], [0] * steps + [1] * steps + [2])


def fit_args(root: Path, data_dir: Path, model_dir: Path, max_steps: int, *extra: str) -> list[str]:
    """test_resume's fit (dropout 0.1, last.ckpt every step), streamed and shuffled in a buffer of 8 blocks."""
    return [
        "fit",
        *family_args("causal_lm", model_dir),
        *cpu_run(root),
        "--model.optim.learning_rate=1e-3",
        "--model.optim.lr_scheduler_type=constant",
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        f"--data.validation_file={data_dir / 'wikitext/wiki_00'}",
        "--data.streaming=true",
        "--data.streaming_shuffle_buffer=8",
        "--data.block_size=32",
        "--data.max_train_samples=40",  # 10 batches of 4 per epoch
        "--data.max_eval_samples=8",
        "--data.batch_size=4",
        "--seed_everything=0",
        f"--trainer.max_steps={max_steps}",
        "--trainer.val_check_interval=5",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=0",
        *extra,
    ]


def test_resumed_stream_equals_uninterrupted(tmp_path, data_dir, causal_lm_dir):
    """Stopped mid-epoch 1 and resumed with --ckpt_path=last, the fit logs the uninterrupted losses."""
    model = causal_lm_dir("gpt2")
    epochs = "--trainer.max_epochs=3"  # set, as the quickstarts set it: Lightning builds a loader before the restore
    main(fit_args(tmp_path / "whole", data_dir, model, 14, epochs))
    cut = tmp_path / "cut"
    main(fit_args(cut, data_dir, model, 12, epochs))  # 2 steps into epoch 1, whose shuffle depends on the epoch
    main(fit_args(cut, data_dir, model, 14, epochs, "--ckpt_path=last"))
    whole = logged(tmp_path / "whole", "train/loss")
    assert logged(cut, "train/loss") == whole and sorted(whole) == list(range(14))
    cut_validations = logged(cut, "val/loss")
    assert cut_validations.pop(11)  # the cut fit ended on max_steps=12 and validated there (FinalValidation)
    assert cut_validations == logged(tmp_path / "whole", "val/loss")
    assert [whole[s] for s in range(10, 14)] != [whole[s] for s in range(4)]  # epoch 1 is shuffled anew


def test_resumed_unshuffled_stream_reads_on_from_its_place(
    tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, monkeypatch
):
    """Unshuffled, the checkpoint holds the stream's place: the resumed fit logs the uninterrupted losses, and its
    tokenizer starts at the row holding token 256 of the file (epoch 1's 9th block of 32: 8 were consumed)."""
    model, plain = causal_lm_dir("gpt2"), "--data.streaming_shuffle_buffer=0"
    main(fit_args(tmp_path / "whole", data_dir, model, 14, plain))
    cut = tmp_path / "cut"
    main(fit_args(cut, data_dir, model, 12, plain))
    tokenized, tokenize = [], inputs.tokenize_text
    monkeypatch.setattr(inputs, "tokenize_text", lambda b, **kw: tokenized.append(b["text"]) or tokenize(b, **kw))
    main(fit_args(cut, data_dir, model, 14, plain, "--ckpt_path=last"))
    assert logged(cut, "train/loss") == logged(tmp_path / "whole", "train/loss")
    lines = (data_dir / "wikitext/wiki_00").read_text(encoding="utf-8").splitlines(keepends=True)
    ends = np.cumsum([len(gpt2_tokenizer(line)["input_ids"]) for line in lines])
    row = int(np.searchsorted(ends, 8 * 32, side="right"))  # the first row with tokens past the 256th
    assert row > 0 and tokenized[0][0] == lines[row]


def test_a_state_without_this_runs_places_makes_the_blocks_again(tmp_path, data_dir, causal_lm_dir):
    """A checkpoint from before places, or places of another number of processes (here 2 on 1; the first one
    deliberately wrong), cannot place the stream: the loader makes the epoch's blocks again and leaves out those
    consumed, so the first batch is still the 6th of the epoch; with this run's place it is too."""
    options = {"train_file": str(data_dir / "wikitext/wiki_00"), "block_size": 32, "batch_size": 4, "streaming": True}
    dm = data_module(tmp_path, causal_lm_dir("gpt2"), **options)
    epoch = [batch["input_ids"] for batch in dm.train_dataloader()]
    loader = dm.train_dataloader()
    batches = iter(loader)
    for _ in range(5):
        next(batches)
    (own,) = loader._places[5]  # this process's place after 5 batches
    for places in (None, [[0, 0], own], [own]):
        resumed = dm.train_dataloader()
        state = {"epoch": 0, "seed": 0, "seen": 5} | ({} if places is None else {"places": places})
        resumed.load_state_dict(state)
        np.testing.assert_array_equal(next(iter(resumed))["input_ids"], epoch[5])


def test_two_processes_resume_each_at_its_own_place(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    """DDP over gloo, process 0 holding 3x the text, so the two places differ: a fit cut mid-epoch 1 and resumed
    logs the uninterrupted losses (each process reads on from its own place)."""
    rows = unequal_rows(tmp_path / "rows.jsonl", data_dir / "wikitext/wikitext-2/valid.txt")
    shares = [[i for row in rows[r::2] for i in gpt2_tokenizer(row)["input_ids"]] for r in (0, 1)]
    steps = min(len(share) // 16 // 2 for share in shares)  # per epoch, blocks of 16, batches of 2
    base = [
        "fit",
        "--model=lit_hf.tasks.CausalLMTask",
        f"--model.model_name_or_path={causal_lm_dir('gpt2')}",
        "--model.optim.lr_scheduler_type=constant",  # the same rate whatever max_steps
        "--data=lit_hf.data.LanguageModelingDataModule",
        f"--data.train_file={tmp_path / 'rows.jsonl'}",
        "--data.streaming=true",
        "--data.validation_split_percentage=0",
        "--data.block_size=16",
        "--data.batch_size=2",
        "--seed_everything=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=3",  # set, as the quickstarts set it: Lightning builds a loader before the restore
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=0",
    ]
    run_lit_hf(*base, f"--trainer.max_steps={steps + 3}", f"--trainer.default_root_dir={tmp_path / 'whole'}")
    cut = [f"--trainer.default_root_dir={tmp_path / 'cut'}"]
    run_lit_hf(*base, f"--trainer.max_steps={steps + 1}", *cut)
    (last,) = (tmp_path / "cut" / "lightning_logs").glob("*/version_0/checkpoints/last.ckpt")
    saved = torch.load(last, weights_only=False)
    (state,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["seen"] == 1 and len(state["places"]) == 2 and state["places"][0] != state["places"][1]
    run_lit_hf(*base, f"--trainer.max_steps={steps + 3}", *cut, "--ckpt_path=last")
    whole = logged(tmp_path / "whole", "train/loss")
    assert logged(tmp_path / "cut", "train/loss") == whole and sorted(whole) == list(range(steps + 3))


PEAK_RSS = """import resource, sys
from lit_hf.data import LanguageModelingDataModule
from lit_hf.options import HubOptions
dm = LanguageModelingDataModule(hub=HubOptions(tokenizer_name=sys.argv[1]), train_file=sys.argv[2],
    data_cache_dir=sys.argv[3], streaming=True, validation_split_percentage=0, block_size=128, batch_size=8)
dm.prepare_data(); dm.setup("fit")
for i, batch in enumerate(dm.train_dataloader()):
    print(i + 1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streaming_memory_does_not_grow_with_the_corpus(tmp_path, data_dir, causal_lm_dir):
    """WikiText-2's validation text repeated to 4 MB, streamed in a fresh process: the last 2 MB raise the peak RSS
    by less than 2 MiB (the text is read 1 MiB at a time; each block is made, batched and dropped). The map-style
    path keeps every token: its peak grew 63 MiB from a 2 MB to a 12 MB corpus, the stream's 10 MiB (README)."""
    text = (data_dir / "wikitext/wikitext-2/valid.txt").read_text(encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((text * (4 * 2**20 // len(text) + 1))[: 4 * 2**20])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(causal_lm_dir("gpt2")), str(corpus), str(tmp_path / "cache")]
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = [int(line.split()[1]) for line in done.stdout.splitlines()]  # KiB after each batch
    half, whole = peaks[len(peaks) // 2 - 1], peaks[-1]
    print(f"streaming peak RSS: {half / 1024:.1f} MiB after 2 MB, {whole / 1024:.1f} MiB after 4 MB")
    assert len(peaks) * 8 * 128 > 0.9 * len(corpus.read_bytes()) / 4.5  # every block: GPT-2 has ~4.4 bytes a token
    assert whole - half < 2 * 1024


def test_hub_stream_offline_fails_in_one_line(tmp_path, causal_lm_dir, capsys):
    model = causal_lm_dir("gpt2")
    args = ["fit", "--model=lit_hf.tasks.CausalLMTask", f"--model.model_name_or_path={model}"]
    args += ["--data=lit_hf.data.LanguageModelingDataModule", "--data.dataset_name=org/tiny-wikitext"]
    args += ["--data.streaming=true", "--data.validation_split_percentage=0", "--trainer.max_steps=2"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit_hf: error:")]
    assert "Could not load the dataset 'org/tiny-wikitext'" in line and "HF_ENDPOINT" in line


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "set --trainer.max_steps"),  # a stream has no length to count steps by
        (["--trainer.max_steps=2"], "or set --data.validation_split_percentage=0"),  # nor a percentage to carve
    ],
)
def test_what_a_streamed_fit_needs_is_said_in_one_line(tmp_path, data_dir, causal_lm_dir, capsys, extra, says):
    model = causal_lm_dir("gpt2")
    args = ["fit", "--model=lit_hf.tasks.CausalLMTask", f"--model.model_name_or_path={model}"]
    args += ["--data=lit_hf.data.LanguageModelingDataModule", f"--data.train_file={data_dir / 'wikitext/wiki_00'}"]
    args += ["--data.streaming=true", f"--data.data_cache_dir={tmp_path / 'cache'}", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit_hf: error:")]
    assert says in line


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"dataset_path": "saved", "streaming": True}, "dataset_path is memory-mapped already"),
        ({"train_file": "t.txt", "streaming": True, "streaming_shuffle_buffer": -1}, "streaming_shuffle_buffer"),
    ],
)
def test_impossible_streaming_options_raise_in_the_constructor(options, says):
    with pytest.raises(ConfigError, match=says):
        LanguageModelingDataModule(model_name_or_path="gpt2", **options)
