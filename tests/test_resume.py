"""Exact resume: a fit stopped mid-epoch and resumed with --ckpt_path logs what the uninterrupted fit logs."""

from pathlib import Path

import pytest
from reference import logged, run_lit_hf

from lit_hf.cli import main

STEPS = 14  # 40 blocks in batches of 4: 10 steps per epoch, so the runs cross an epoch end


def fit_args(root: Path, data_dir: Path, model_dir: Path, devices: int, max_steps: int) -> list[str]:
    """A tiny GPT-2 with dropout 0.1 (so the random streams matter) and a warmup spanning the interruptions, with
    last.ckpt after every step and Lightning's default checkpoint at each validation."""
    return [
        "fit",
        "--model=lit_hf.tasks.CausalLMTask",
        "--data=lit_hf.data.LanguageModelingDataModule",
        f"--model.model_name_or_path={model_dir}",
        "--model.optim.learning_rate=1e-3",
        "--model.optim.warmup_steps=10",
        "--model.optim.lr_scheduler_type=constant_with_warmup",  # a schedule that does not depend on max_steps
        f"--data.data_cache_dir={root / 'cache'}",
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=32",
        "--data.max_train_samples=40",
        "--data.max_eval_samples=8",
        f"--data.batch_size={4 // devices}",
        "--seed_everything=0",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        *(["--trainer.strategy=ddp"] if devices > 1 else []),
        f"--trainer.max_steps={max_steps}",
        "--trainer.val_check_interval=5",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=0",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",  # saves at validation end
    ]


def differences(want: Path, got: Path) -> dict[str, float]:
    """Largest absolute difference per tag; the two roots must have logged the same steps."""
    diffs = {}
    for tag in ("train/loss", "train/lr", "val/loss"):
        a, b = logged(want, tag), logged(got, tag)
        assert sorted(a) == sorted(b), (tag, sorted(a), sorted(b))
        diffs[tag] = max(abs(a[step] - b[step]) for step in a)
    return diffs


@pytest.fixture(scope="module")
def dropout_gpt2(causal_lm_dir) -> Path:  # noqa: ANN001
    return causal_lm_dir("gpt2")  # GPT2Config's default dropout: 0.1 on embeddings, attention and residuals


def test_resume_mid_epoch_equals_uninterrupted_bit_for_bit(tmp_path, data_dir, dropout_gpt2):
    main(fit_args(tmp_path / "whole", data_dir, dropout_gpt2, 1, STEPS))
    cut = tmp_path / "cut"
    main(fit_args(cut, data_dir, dropout_gpt2, 1, 7))  # stops mid-epoch 0
    main([*fit_args(cut, data_dir, dropout_gpt2, 1, 12), "--ckpt_path=last"])  # through the epoch end, stops in 1
    main([*fit_args(cut, data_dir, dropout_gpt2, 1, STEPS), "--ckpt_path=last"])  # resumes mid-epoch 1
    assert logged(cut, "train/loss").keys() == set(range(STEPS)) and logged(cut, "val/loss").keys() == {4, 9}
    assert differences(tmp_path / "whole", cut) == {"train/loss": 0.0, "train/lr": 0.0, "val/loss": 0.0}

    # A path: the checkpoint Lightning's default callback wrote at the validation closing epoch 0 (step 10).
    (epoch_end,) = cut.rglob("epoch=0-step=10.ckpt")
    again = tmp_path / "again"
    main([*fit_args(again, data_dir, dropout_gpt2, 1, STEPS), f"--ckpt_path={epoch_end}"])
    whole, resumed = logged(tmp_path / "whole", "train/loss"), logged(again, "train/loss")
    assert resumed == {step: whole[step] for step in range(10, STEPS)}  # no step shifted, every value equal


def test_resume_on_two_processes_equals_uninterrupted(tmp_path, data_dir, dropout_gpt2):
    run_lit_hf(*fit_args(tmp_path / "whole", data_dir, dropout_gpt2, 2, STEPS))
    run_lit_hf(*fit_args(tmp_path / "cut", data_dir, dropout_gpt2, 2, 7))
    run_lit_hf(*fit_args(tmp_path / "cut", data_dir, dropout_gpt2, 2, STEPS), "--ckpt_path=last")
    diffs = differences(tmp_path / "whole", tmp_path / "cut")
    assert all(diff <= 1e-6 for diff in diffs.values()), diffs
