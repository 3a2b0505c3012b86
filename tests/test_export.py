"""Export: the offline quickstarts fitted briefly, exported from their checkpoints, and loaded in `pipeline()` with
the same outputs as lit_hf `predict`; the fit-end export of the best checkpoint; switching it off."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from runs import family_args, run_dir
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, pipeline, set_seed

from lit_hf.cli import main
from lit_hf.errors import LitHFError
from lit_hf.export import export_pretrained, with_task_params

REPO = Path(__file__).resolve().parents[1]
BRIEF = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def quickstart(root: Path, name: str, *extra: str) -> tuple[list[str], Path | None]:
    """A brief fit of `configs/<name>.yaml`; the config arguments (for export and predict) and its checkpoint."""
    config = [f"--config={REPO / 'configs' / f'{name}.yaml'}", f"--data.data_cache_dir={root / 'cache'}"]
    main(["fit", *config, *BRIEF, *extra, f"--trainer.default_root_dir={root}"])
    config += [arg for arg in extra if not arg.startswith("--trainer.")]
    ckpts = sorted((run_dir(root) / "checkpoints").glob("*.ckpt"))
    return config, ckpts[0] if ckpts else None


def export(config: list[str], ckpt: Path, target: Path) -> Path:
    main(["export", *config, f"--ckpt_path={ckpt}", f"--export_dir={target}"])
    return target


def predict(root: Path, config: list[str], ckpt: Path, *extra: str) -> Path:
    main(["predict", *config, f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={root}", *extra])
    return run_dir(root)


def test_classification_export_matches_predict_in_pipeline(tmp_path):
    config, ckpt = quickstart(tmp_path, "quickstart_classification", "--data.max_train_samples=64")
    exported = export(config, ckpt, tmp_path / "export")
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "README.md"} <= {
        p.name for p in exported.iterdir()
    }
    hf_config = AutoConfig.from_pretrained(exported)
    assert hf_config.problem_type == "single_label_classification"
    assert sorted(hf_config.label2id) == ["negative", "positive"] and hf_config.id2label[hf_config.label2id["positive"]]
    test_file = REPO / "configs/quickstart/reviews/validation.csv"
    run = predict(tmp_path, config, ckpt, f"--data.predict_file={test_file}", "--data.max_predict_samples=40")
    rows = [json.loads(line) for line in (run / "predict_results.jsonl").read_text().splitlines()]
    import csv

    texts = [row["text"] for row in csv.DictReader(test_file.open())][:40]
    classify = pipeline("text-classification", model=str(exported), device="cpu")
    outputs = classify(texts, top_k=None)
    diffs = [
        abs(pipe["score"] - row["probabilities"][pipe["label"]])
        for row, per_text in zip(rows, outputs, strict=True)
        for pipe in per_text
    ]
    print(f"classification: max |pipeline - predict| = {max(diffs):.3g} over {len(diffs)} probabilities")
    assert max(diffs) <= 1e-6
    assert [max(p, key=lambda x: x["score"])["label"] for p in outputs] == [row["prediction"] for row in rows]
    bare = pipeline("text-classification", model=str(exported))(texts[0])  # as a user types it, no options
    assert bare[0]["label"] == rows[0]["prediction"]
    again = export([f"--config={ckpt.parent.parent / 'config.yaml'}"], ckpt, tmp_path / "from-saved-config")
    assert load_file(again / "model.safetensors").keys() == load_file(exported / "model.safetensors").keys()
    assert all(
        torch.equal(a, load_file(exported / "model.safetensors")[k])
        for k, a in load_file(again / "model.safetensors").items()
    )
    card = (exported / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "python -m lit_hf fit --config config.yaml" in card
    assert "val/accuracy" in card  # from the run's results.json


def test_causal_lm_export_generates_as_predict_and_best_checkpoint_is_exported(tmp_path):
    monitor = [
        "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.monitor=val/loss",
        "--trainer.callbacks.mode=max",  # the worst validation: the first, not the last weights
        "--trainer.callbacks.save_top_k=-1",  # keeps the last epoch's too
        "--trainer.max_epochs=2",
        "--trainer.val_check_interval=1.0",
        "--model.generation.max_new_tokens=12",
    ]
    config, _ = quickstart(tmp_path, "quickstart_clm", *monitor)
    run = run_dir(tmp_path)
    best = Path(json.loads((run / "results.json").read_text())["best_model_path"])
    assert best.name.startswith("epoch=0-")
    exported = load_file(run / "huggingface" / "model.safetensors")
    best_weights = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    (last,) = (run / "checkpoints").glob("epoch=1-*.ckpt")
    last_weights = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in exported.items():
        assert torch.equal(tensor, best_weights[f"model.{name}"]), name
    assert not all(torch.equal(t, last_weights[f"model.{n}"]) for n, t in exported.items())

    target = export(config, best, tmp_path / "export")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def main(\nThe module\nimport\nclass Error(Exception):\n")
    predicted = predict(tmp_path, config, best, f"--data.predict_file={prompts}", "--data.eval_batch_size=4")
    rows = [json.loads(line) for line in (predicted / "predictions.jsonl").read_text().splitlines()]
    generate = pipeline("text-generation", model=str(target), device="cpu")
    texts = [generate(row["prompt"], do_sample=False, return_full_text=False)[0]["generated_text"] for row in rows]
    assert texts == [row["completion"] for row in rows]  # max_new_tokens=12 came from generation_config.json
    assert json.loads((target / "generation_config.json").read_text())["max_new_tokens"] == 12
    assert all(len(text) > 0 for text in texts)


def test_bare_text_generation_pipeline_stays_within_the_quickstart_models_positions(tmp_path):
    """`pipeline("text-generation", model=DIR)("def ")` as a user types it. The pipeline's own default asks for 256
    new tokens after the prompt, past the 256 positions of the quickstart's GPT-2 (an IndexError), unless the export's
    generation config limits the length: with `generation.max_new_tokens` unset, to the model's positions. Seed 2
    samples no end token before the limit from these weights (the quickstart model's random ones, seeded)."""
    from lit_hf.tasks import CausalLMTask

    torch.manual_seed(0)
    task = CausalLMTask(str(REPO / "configs/quickstart/byte-gpt2"), from_scratch=True)
    torch.save({"state_dict": task.state_dict()}, tmp_path / "init.ckpt")
    target = export([f"--config={REPO / 'configs/quickstart_clm.yaml'}"], tmp_path / "init.ckpt", tmp_path / "export")
    assert json.loads((target / "generation_config.json").read_text())["max_length"] == 256  # config.json's n_positions
    set_seed(2)
    (out,) = pipeline("text-generation", model=str(target))("def ")
    assert out["generated_text"].startswith("def ")


def test_a_module_that_is_not_exportable_is_one_line(tmp_path):
    from lightning.pytorch.demos.boring_classes import BoringModel

    with pytest.raises(LitHFError, match=r"^BoringModel cannot be exported: .*lit_hf\.contracts\.Exportable"):
        export_pretrained(BoringModel(), {}, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_translation_export_translates_as_predict(tmp_path):
    """transformers 5 removed the translation and text2text-generation pipelines; what they ran is `generate` under
    the model's generation config, so the export is held to that, one sentence at a time. The source prefix the run
    put before every source (T5's default here) is in the exported config and in the model card's code, which, run
    as written, translates as predict does."""
    prefix = "translate English to German: "  # T5's, chosen by the data module for a t5 model without a prefix
    t5_default = "--data.source_prefix=null"  # the quickstart's "" replaced by the default
    config, ckpt = quickstart(tmp_path, "quickstart_translation", "--data.max_train_samples=64", t5_default)
    target = export(config, ckpt, tmp_path / "export")
    sources = tmp_path / "sources.txt"
    sources.write_text("the cat is small .\nI see a red house .\nwe like the dog .\n")
    run = predict(tmp_path, config, ckpt, f"--data.predict_file={sources}")
    want = (run / "predictions.txt").read_text().splitlines()
    for folder in (target, ckpt.parent.parent / "huggingface"):  # the export command's and fit's own
        assert AutoConfig.from_pretrained(folder).task_specific_params == {"translation_en_to_de": {"prefix": prefix}}
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForSeq2SeqLM.from_pretrained(target).eval()
    got = []
    for line in sources.read_text().splitlines():
        tokens = model.generate(**tokenizer(prefix + line, return_tensors="pt"))  # options: generation_config.json
        got.append(tokenizer.decode(tokens[0], skip_special_tokens=True).strip())
    assert got == want and len(want) == 3
    assert json.loads((target / "generation_config.json").read_text())["max_new_tokens"] == 64  # the data's length
    card = (target / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0]
    assert "pipeline_tag: translation" in card and repr(prefix + "...") in code
    for line, expected in zip(sources.read_text().splitlines(), want, strict=True):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code.replace("PATH", repr(str(target))).replace(repr(prefix + "..."), repr(prefix + line)), {})
        assert out.getvalue().strip() == expected


def test_export_writes_the_run_prefix_over_a_pretrained_configs():
    """A pretrained T5's config has a prefix per task (t5-small's below, abridged); the export keeps them and writes
    the prefix the run trained with into its own task's entry, even an empty one; a config without any gets no
    empty entry."""
    t5_small = {
        "summarization": {"prefix": "summarize: ", "num_beams": 4},
        "translation_en_to_de": {"prefix": "translate English to German: ", "num_beams": 4},
    }
    run = with_task_params(t5_small, {"translation_en_to_de": {"prefix": ""}})
    assert run == {
        "summarization": {"prefix": "summarize: ", "num_beams": 4},
        "translation_en_to_de": {"prefix": "", "num_beams": 4},
    }
    assert t5_small["translation_en_to_de"]["prefix"] == "translate English to German: "  # not changed in place
    assert with_task_params(None, {"translation_en_to_ro": {"prefix": ""}}) is None
    assert with_task_params(None, {"summarization": {"prefix": "tl;dr: "}}) == {"summarization": {"prefix": "tl;dr: "}}
    assert with_task_params({"a": {}}, {}) == {"a": {}}


def test_fit_export_switched_off_and_another_tasks_checkpoint_is_one_line(tmp_path, capsys):
    config, ckpt = quickstart(tmp_path, "quickstart_clm", "--save_pretrained.enabled=false")
    run = run_dir(tmp_path)
    assert (run / "config.yaml").is_file() and ckpt is not None and not (run / "huggingface").exists()
    other = [f"--config={REPO / 'configs/quickstart_classification.yaml'}"]
    with pytest.raises(SystemExit) as exit_info:
        export(other, ckpt, tmp_path / "export")
    assert exit_info.value.code == 2
    assert "does not fit --model SequenceClassificationTask" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_export_from_a_sharded_checkpoint_folder(tmp_path, causal_lm_dir, data_dir):
    """The layout Lightning's FSDP strategy writes (state_dict_type="sharded"): a torch.distributed.checkpoint
    folder with the weights under "model" and the rest in meta.pt. Exported whole, equal to the weights saved."""
    import torch.distributed.checkpoint as dcp

    from lit_hf.tasks import CausalLMTask

    model_dir = causal_lm_dir("gpt2")
    task = CausalLMTask(str(model_dir))
    with torch.no_grad():
        for p in task.parameters():
            p.add_(torch.randn_like(p))  # "trained": not the weights the config's model starts from
    weights = {k: v.clone() for k, v in task.state_dict().items()}
    folder = tmp_path / "epoch=0-step=1.ckpt"
    dcp.save({"model": weights}, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)
    torch.save({"epoch": 0, "global_step": 1, "hyper_parameters": dict(task.hparams)}, folder / "meta.pt")
    config = [
        *family_args("causal_lm", model_dir),
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
    ]
    target = export(config, folder, tmp_path / "export")
    exported = load_file(target / "model.safetensors")
    assert exported and all(torch.equal(t, weights[f"model.{name}"]) for name, t in exported.items())
    assert not torch.equal(
        exported["transformer.wte.weight"], load_file(model_dir / "model.safetensors")["transformer.wte.weight"]
    )


def test_which_weights_the_fit_end_export_takes():
    from types import SimpleNamespace

    from lit_hf.callbacks import SavePretrained

    monitored = SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor="val/loss", best_model_path="best.ckpt"))
    unmonitored = SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor=None, best_model_path="e.ckpt"))
    assert SavePretrained()._best_path(monitored) == "best.ckpt"
    assert SavePretrained(weights="last")._best_path(monitored) is None
    assert SavePretrained()._best_path(unmonitored) is None
    assert SavePretrained()._best_path(SimpleNamespace(checkpoint_callback=None)) is None


def bare_use(name: str, folder: Path) -> str:
    """What a user runs on the export of `configs/<name>.yaml` as its model card says, with no options of their own:
    `pipeline(TAG, model=DIR)(input)`, or the card's code run as written (seq2seq and multiple choice have no
    pipeline in transformers 5). Returns the answer as text."""
    if name == "quickstart_image_classification":
        image = next((REPO / "configs/quickstart/shapes/validation").rglob("*.png"))
        return pipeline("image-classification", model=str(folder))(str(image))[0]["label"]
    card = (folder / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("PATH", repr(str(folder))), {})
    assert printed.getvalue().endswith("\n")  # ran to its print (an untrained T5 may well generate nothing)
    return printed.getvalue()


@pytest.mark.parametrize(
    "name",
    [  # causal LM and text classification: their bare pipelines are tested above, with a trained model
        "quickstart_translation",
        "quickstart_summarization",
        "quickstart_multiple_choice",
        "quickstart_image_classification",
    ],
)
def test_every_familys_export_works_bare_and_its_files_share_one_mode(tmp_path, monkeypatch, name):
    """Each quickstart's model as fit would start it (the config's seed and random weights: no training), saved as a
    checkpoint, exported by the command users type, then used as its model card says with no options added. Every
    file of the export has the mode a file written by this process gets (0644 under umask 022): safetensors wrote
    the weights 0600."""
    from lit_hf.cli.lightning import LitHFCLI

    monkeypatch.chdir(tmp_path)
    config = f"--config={REPO / 'configs' / f'{name}.yaml'}"
    cli = LitHFCLI(subclass_mode_model=True, subclass_mode_data=True, run=False, args=[config])
    torch.save({"state_dict": cli.model.state_dict()}, tmp_path / "init.ckpt")
    target = export([config], tmp_path / "init.ckpt", tmp_path / "export")
    answer = bare_use(name, target)
    if name == "quickstart_multiple_choice":
        assert answer.strip() in ("Jack was glad all day.", "Jack felt upset about it.")
    elif name.endswith("classification"):
        assert answer in AutoConfig.from_pretrained(target).id2label.values()
    (tmp_path / "plain").write_text("")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in target.iterdir()}
    assert set(modes.values()) == {oct((tmp_path / "plain").stat().st_mode & 0o777)}, modes
