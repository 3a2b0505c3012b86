"""`python -m lit_hf lm-eval`: a LoRA run's checkpoint through lm-evaluation-harness equals lm-eval's own
`--model hf` on the run's merged export, on two local tasks (multiple choice and rolling-loglikelihood perplexity)."""

import json
import math
import sys
from pathlib import Path

import pytest
from reference import wiki_00_held_out
from runs import family_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_hf.cli import main

TASKS = "lit_hf_swag,lit_hf_wiki"
RUN = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

MULTIPLE_CHOICE = """task: lit_hf_swag
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{sent1}}}} {{{{sent2}}}}"
doc_to_target: label
doc_to_choice: "{{{{[ending0, ending1, ending2, ending3]}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
ROLLING = """task: lit_hf_wiki
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """lm-eval YAML tasks over local JSON lines: the SWAG sample's 10 questions (4 endings each) and 3 held-out
    wiki_00 paragraphs, each longer than the model's 128 positions, so lm-eval scores them in rolling windows."""
    folder = tmp_path_factory.mktemp("tasks")
    (folder / "swag.jsonl").write_text((data_dir / "swag" / "sample.json").read_text(encoding="utf-8"), "utf-8")
    paragraphs = [p for p in wiki_00_held_out(data_dir).split("\n") if len(p) > 700][:3]
    assert len(paragraphs) == 3
    (folder / "wiki.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs), encoding="utf-8")
    (folder / "swag.yaml").write_text(MULTIPLE_CHOICE.format(data=folder / "swag.jsonl"), encoding="utf-8")
    (folder / "wiki.yaml").write_text(ROLLING.format(data=folder / "wiki.jsonl"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, trained_gpt2_dir: Path) -> Path:
    """A 4-step LoRA fit of the trained GPT-2 (adapters only in the checkpoint); returns the checkpoint."""
    root = tmp_path_factory.mktemp("lora-run")
    main(["fit", *family_args("causal_lm"), *RUN,
          f"--model.model_name_or_path={trained_gpt2_dir}", "--model.lora={}", "--model.optim.learning_rate=1e-2",
          f"--data.train_file={data_dir / 'wikitext/wiki_00'}", f"--data.data_cache_dir={root / 'cache'}",
          "--data.block_size=64", "--data.batch_size=2", "--data.max_train_samples=8",
          "--data.validation_split_percentage=0", "--trainer.max_steps=4", f"--trainer.default_root_dir={root}",
          "--save_pretrained.enabled=false"])  # fmt: skip
    (ckpt,) = root.rglob("*.ckpt")
    return ckpt


def lm_eval_hf(export: Path, tasks: Path) -> dict:
    """What `lm_eval --model hf --model_args pretrained=EXPORT --tasks ... --include_path TASKS --device cpu` runs
    (its `simple_evaluate` call), with a task manager that leaves lm-eval's own tasks unindexed (16 s)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={export}", tasks=TASKS.split(","),
                                   device="cpu", batch_size=1, task_manager=manager)  # fmt: skip


def test_bridge_equals_lm_eval_on_the_export(tmp_path, lora_run, local_tasks):
    pytest.importorskip("lm_eval")
    config = [f"--config={lora_run.parent.parent / 'config.yaml'}", f"--ckpt_path={lora_run}"]
    main(["lm-eval", *config, f"--tasks={TASKS}", f"--include_path={local_tasks}",
          "--bootstrap_iters=0",  # no stderr by resampling; the values are the same
          f"--trainer.default_root_dir={tmp_path / 'bridge'}"])  # fmt: skip
    (folder,) = (tmp_path / "bridge").rglob("lm_eval.json")
    bridge = json.loads(folder.read_text())["results"]

    export = tmp_path / "export"
    main(["export", *config, f"--export_dir={export}", "--model.lora.merge=true"])  # plain transformers weights
    direct = lm_eval_hf(export, local_tasks)["results"]

    metrics = {"lit_hf_swag": ["acc,none", "acc_norm,none"],
               "lit_hf_wiki": ["word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"]}  # fmt: skip
    for task, names in metrics.items():
        for name in names:
            assert bridge[task][name] == pytest.approx(direct[task][name], rel=1e-6), (task, name)
    assert 1 < bridge["lit_hf_wiki"]["byte_perplexity,none"] < 256  # trained: below a uniform guess per byte
    assert math.log2(bridge["lit_hf_wiki"]["byte_perplexity,none"]) == pytest.approx(
        bridge["lit_hf_wiki"]["bits_per_byte,none"], rel=1e-9
    )

    scalars = json.loads((folder.parent / "results.json").read_text())
    assert scalars["lm_eval/lit_hf_swag/acc"] == bridge["lit_hf_swag"]["acc,none"]
    assert scalars["lm_eval/lit_hf_wiki/word_perplexity"] == bridge["lit_hf_wiki"]["word_perplexity,none"]
    events = EventAccumulator(str(folder.parent))
    events.Reload()
    logged = events.Scalars("lm_eval/lit_hf_wiki/bits_per_byte")[0].value
    assert logged == pytest.approx(bridge["lit_hf_wiki"]["bits_per_byte,none"], rel=1e-6)


def test_without_lm_eval_one_line_says_how_to_get_it(tmp_path, capsys, monkeypatch, causal_lm_dir):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed: find_spec finds nothing
    with pytest.raises(SystemExit) as exit_:
        main(["lm-eval", *family_args("causal_lm"),
              f"--model.model_name_or_path={causal_lm_dir('gpt2')}", "--tasks=hellaswag",
              f"--trainer.default_root_dir={tmp_path}", *RUN])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == 'lit_hf: error: lm-eval needs lm-evaluation-harness: pip ' \
        'install -e ".[eval]" (or pip install "lm-eval[hf]>=0.4.13").'  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_an_unknown_task_is_refused_in_one_line(tmp_path, capsys, monkeypatch, causal_lm_dir, local_tasks):
    lm_eval_tasks = pytest.importorskip("lm_eval.tasks")
    real = lm_eval_tasks.TaskManager  # lm-eval's own tasks left unindexed (16 s): the unknown name is looked up

    def local(include_path: str, include_defaults: bool = True) -> object:
        return real(include_path=include_path, include_defaults=False)

    monkeypatch.setattr(lm_eval_tasks, "TaskManager", local)
    with pytest.raises(SystemExit) as exit_:
        main(["lm-eval", *family_args("causal_lm"),
              f"--model.model_name_or_path={causal_lm_dir('gpt2')}", "--tasks=lit_hf_swag,lit_hf_swagg",
              f"--data.validation_file={local_tasks / 'swag.jsonl'}",
              f"--include_path={local_tasks}", f"--trainer.default_root_dir={tmp_path}", *RUN])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and last.startswith("lit_hf: error: lm-eval has no task 'lit_hf_swagg'")
    assert not list(tmp_path.iterdir())
