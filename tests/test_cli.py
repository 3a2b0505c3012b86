"""The command line: help, every shipped config, and one clear line (exit 2) for each user mistake."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from runs import family_args

from lit_hf.cli import main
from lit_hf.cli.lightning import LitHFCLI
from lit_hf.data.base import linked_config, linked_tokenizer
from lit_hf.options import HubOptions

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml"))
OVERLAYS = sorted((REPO / "configs" / "overlays").glob("*.yaml"))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_hf", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_help_lists_subcommands_and_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "validate", "test", "predict"))
    with pytest.raises(SystemExit):
        main(["fit", "--model=lit_hf.tasks.CausalLMTask", "--model.help=lit_hf.tasks.CausalLMTask"])
    assert "--model.config_overrides" in capsys.readouterr().out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={config}", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: lit_hf." in printed


LORA_CONFIGS = sorted(p for p in CONFIGS if p.stem.endswith("_lora"))


@pytest.mark.parametrize("config", LORA_CONFIGS, ids=lambda p: p.name)
def test_lora_configs_are_their_base_configs_plus_adapters(config, capsys):
    """Each `*_lora.yaml` trains the same model on the same data as its base config; only the adapter options, the
    optimizer's rates and (BERT: the LoRA paper's longer schedule) the epochs differ."""

    def printed(path: Path) -> dict:
        with pytest.raises(SystemExit):
            main(["fit", f"--config={path}", "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    assert len(LORA_CONFIGS) == 4
    lora, base = printed(config), printed(config.with_name(config.name.replace("_lora", "")))
    assert lora["model"]["init_args"]["lora"] is not None and base["model"]["init_args"]["lora"] is None
    for key in set(lora["model"]["init_args"]) - {"lora", "optim"}:
        assert lora["model"]["init_args"][key] == base["model"]["init_args"][key], key
    tuned = {"learning_rate", "warmup_ratio"}
    for key in set(lora["model"]["init_args"]["optim"]) - tuned:
        assert lora["model"]["init_args"]["optim"][key] == base["model"]["init_args"]["optim"][key], key
    assert lora["data"] == base["data"]
    assert {**lora["trainer"], "max_epochs": None} == {**base["trainer"], "max_epochs": None}
    assert all("_LINE" not in line for line in config.read_text().splitlines())  # measured figures filled in


@pytest.mark.parametrize("name", ["quickstart_clm", "quickstart_classification", "quickstart_translation"])
def test_config_paths_resolve_against_the_config_file(name, tmp_path, monkeypatch):
    """Paths in a config file are relative to that file; on the command line, to the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("some text\n")
    args = [f"--config={REPO / 'configs' / f'{name}.yaml'}", "--data.predict_file=mine.txt"]
    config = LitHFCLI(subclass_mode_model=True, subclass_mode_data=True, run=False, args=args).config
    model, data = config.model.init_args, config.data.init_args
    quickstart = REPO / "configs" / "quickstart"
    assert Path(model.model_name_or_path).parent == quickstart and Path(model.model_name_or_path).is_dir()
    assert data.model_name_or_path == model.model_name_or_path  # the link carries the resolved path
    assert Path(data.train_file).is_file() and Path(data.train_file).is_relative_to(quickstart)
    assert data.predict_file == str(tmp_path / "mine.txt")
    assert type(data.train_file) is str  # plain strings reach the constructors (and checkpoints)


def test_hub_ids_stay_hub_ids(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", f"--config={REPO / 'configs/gpt2_wikitext.yaml'}", "--print_config"])
    assert "model_name_or_path: openai-community/gpt2" in capsys.readouterr().out


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_compose(overlay, capsys):
    with pytest.raises(SystemExit):
        main(["fit", f"--config={REPO / 'configs/gpt2_wikitext.yaml'}", f"--config={overlay}", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    for key, value in yaml.safe_load(overlay.read_text())["trainer"].items():  # the overlay's values win
        assert printed[key]["class_path"] == value["class_path"] if isinstance(value, dict) else printed[key] == value


def test_tokenizer_follows_model_unless_named(causal_lm_dir, gpt2_tokenizer, tmp_path):
    model_dir = str(causal_lm_dir("gpt2"))
    base = [
        *family_args("causal_lm", model_dir),
        "--data.validation_file=x.txt",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    linked = LitHFCLI(subclass_mode_model=True, subclass_mode_data=True, run=False, args=base)
    data = linked.datamodule
    assert data.model_name_or_path == model_dir and data.hub == HubOptions()
    assert linked_tokenizer(data.model_name_or_path, data.hub).name_or_path == model_dir  # the model's own
    assert linked_config(data.model_name_or_path, data.hub).name_or_path == model_dir
    gpt2_tokenizer.save_pretrained(tmp_path / "tok")  # a tokenizer directory apart from the model's
    named = LitHFCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[*base, f"--model.hub.tokenizer_name={tmp_path / 'tok'}", f"--model.hub.config_name={model_dir}/"],
    )
    data = named.datamodule
    assert data.hub == named.model.hub  # the same group, linked once
    assert linked_tokenizer(data.model_name_or_path, data.hub).name_or_path == str(tmp_path / "tok")
    assert data.hub.config_name == os.path.abspath(model_dir + "/")  # the named one


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lit_hf: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]


CLM = [
    "validate",
    *family_args("causal_lm"),
    "--trainer.accelerator=cpu",
]


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline-mode", "hub-unreachable"],
)
def test_unreachable_hub_model_fails_fast(tmp_path, env):
    (tmp_path / "v.txt").write_text("hello world\n")
    env = {**env, "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    result = cli(
        *CLM, "--model.model_name_or_path=openai-community/gpt2", f"--data.validation_file={tmp_path}/v.txt", env=env
    )
    assert_one_line_error(result, "'openai-community/gpt2'", "not in the cache", "local directory", "HF_ENDPOINT")
    assert "`python -m lit_hf download openai-community/gpt2`" in result.stderr


@pytest.mark.parametrize(("offline", "attempts"), [(True, 0), (False, 1)], ids=["offline-mode", "hub-unreachable"])
def test_unreachable_hub_is_tried_once(tmp_path, monkeypatch, offline, attempts):
    """Fast means no retries: every TCP connection this process tries is counted (httpx connects through
    `socket.create_connection` too); offline mode tries none, an unreachable hub exactly the one probe."""
    import socket

    import datasets.config
    import huggingface_hub.constants
    from transformers import AutoConfig

    from lit_hf.errors import LitHFError
    from lit_hf.hub import from_hub, hub_reachable

    tried = []

    def refuse(address, *args, **kwargs):
        tried.append(address)
        raise ConnectionRefusedError(f"refused {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    hub_reachable.cache_clear()
    with pytest.raises(LitHFError, match="not in the cache"):
        from_hub(AutoConfig.from_pretrained, "openai-community/gpt2", "config", cache_dir=str(tmp_path))
    hub_reachable.cache_clear()
    assert tried == [("127.0.0.1", 9)] * attempts


def test_unreachable_hub_dataset_fails_fast(tmp_path, causal_lm_dir):
    result = cli(
        *CLM,
        f"--model.model_name_or_path={causal_lm_dir('gpt2')}",
        "--data.dataset_name=Salesforce/wikitext",
        "--data.dataset_config_name=wikitext-2-raw-v1",
        f"--data.data_cache_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        env={"HF_HOME": str(tmp_path / "hf")},
    )
    assert_one_line_error(result, "'Salesforce/wikitext'", "train_file", "HF_ENDPOINT")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--data.validation_file=/no/such/file.txt"], ["validation_file '/no/such/file.txt' does not exist"]),
        (["--data.validation_file=VALID", "--data.text_column=body"], ["no column 'body'"]),
        (["--data.validation_file=EMPTY"], ["empty"]),
        (["--data.validation_file=VALID", "--data.block_size=4096"], ["exceeds the model's 128 positions"]),
        (
            ["--data.validation_file=VALID", "--model.optim.warmup_ratio=0.1", "--model.optim.warmup_steps=5"],
            ["warmup_steps"],
        ),
    ],
    ids=["missing-file", "no-column", "empty-split", "block-too-long", "both-warmups"],
)
def test_user_mistakes_give_one_line(tmp_path, data_dir, causal_lm_dir, args, needles):
    (tmp_path / "empty.txt").write_text("")
    swap = {"VALID": str(data_dir / "wikitext/wiki_00"), "EMPTY": str(tmp_path / "empty.txt")}
    args = [a.split("=")[0] + "=" + swap.get(a.split("=")[1], a.split("=")[1]) for a in args]
    model_dir = causal_lm_dir("gpt2")
    result = cli(
        *CLM,
        f"--model.model_name_or_path={model_dir}",
        f"--model.hub.config_name={model_dir}",
        *args,
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        f"--trainer.default_root_dir={tmp_path}",
    )
    assert_one_line_error(result, *needles)
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("results.json"))


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["fit", "--trainer.max_epoch=3", "--print_config"],
            "lit_hf: error: Unknown option --trainer.max_epoch; did you mean",
        ),
        (["export", "--ckpt_path=x.ckpt", "--export_dri=out"], "lit_hf: error: Unknown option --export_dri; did you"),
        (["download", "gpt2", "--rev", "v1"], "lit_hf: error: unrecognized arguments: --rev v1;"),
    ],
    ids=["fit", "export", "download"],
)
def test_an_option_is_taken_only_as_written(args, line, capsys, monkeypatch):
    """argparse takes a prefix of an option for the option (`--trainer.max_epoch=3` ran 3 epochs); lit_hf's parsers
    take an option only as written, and a misspelt one is one line in every command (`export` printed argparse's
    whole usage)."""
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:1], "--config=configs/quickstart_clm.yaml", *args[1:]] if args[0] != "download" else args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
