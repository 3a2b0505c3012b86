"""Hub access through a real mirror (olah on 127.0.0.1): download, resume, fit by hub id, proxies, a stopped mirror."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mirror import commit_repo, copy_tokenizer, hub_env, lit_hf, seed_branch, start_olah, start_relay
from reference import read_results, reference_blocks
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from lit_hf.cli import main
from lit_hf.cli.download import parser, selection
from lit_hf.data import LanguageModelingDataModule
from lit_hf.hub import probe_address
from lit_hf.options import HubOptions

MODEL_FILES = {"README.md", "config.json", "generation_config.json", "merges.txt", "vocab.json"}
CHUNK = 1024 * 1024
LINES = 90  # WikiText-2 lines in the dataset repo: 60 train, 30 validation


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    # 64 wide, so the weights (13 MB) span more than one of hf_hub's 10 MiB download chunks
    return GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_embd=64, n_layer=2, n_head=2, n_positions=128))


def model_repo(path: Path, tokenizers: Path, safetensors: bool) -> None:
    """Both PyTorch formats (or only `.bin`), the real GPT-2 tokenizer files, and other frameworks' stand-ins."""
    path.mkdir(parents=True)
    model = tiny_gpt2()
    model.save_pretrained(path)  # config.json, generation_config.json, model.safetensors
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    if not safetensors:
        (path / "model.safetensors").unlink()
    copy_tokenizer(tokenizers / "gpt2", path)
    for name in ("tf_model.h5", "flax_model.msgpack", "rust_model.ot", "onnx/model.onnx", "coreml/model.mlmodel"):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_bytes(os.urandom(50_000))  # stand-ins: only their names matter
    (path / "README.md").write_text("# tiny-gpt2\n\nA 2-layer GPT-2 with random weights, for tests.\n")
    commit_repo(path)


def dataset_repo(path: Path, wikitext: Path) -> None:
    """Laid out as the hub's Salesforce/wikitext: a `text` column of lines with their line breaks, in parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (path / "data").mkdir(parents=True)
    lines = wikitext.read_text(encoding="utf-8").splitlines(keepends=True)[:LINES]
    for split, rows in (("train", lines[:60]), ("validation", lines[60:])):
        pq.write_table(pa.table({"text": rows}), path / "data" / f"{split}-00000-of-00001.parquet")
    (path / "README.md").write_text("# tiny-wikitext\n\nA few lines of WikiText-2 (raw), for tests.\n")
    commit_repo(path)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, data_dir):
    """olah serving org/tiny-gpt2, org/tiny-gpt2-bin (no safetensors) and the dataset org/tiny-wikitext."""
    root = tmp_path_factory.mktemp("mirror")
    repos = {
        ("models", "tiny-gpt2"): lambda p: model_repo(p, data_dir / "tokenizers", safetensors=True),
        ("models", "tiny-gpt2-bin"): lambda p: model_repo(p, data_dir / "tokenizers", safetensors=False),
        ("datasets", "tiny-wikitext"): lambda p: dataset_repo(p, data_dir / "wikitext" / "wikitext-2" / "valid.txt"),
    }
    for (repo_type, name), build in repos.items():
        build(root / "mirrors" / repo_type / "org" / name)
        seed_branch(root / "cache", repo_type, "org", name, root / "mirrors" / repo_type / "org" / name)
    process, port, log = start_olah(root, root / "mirrors")
    yield {"port": port, "log": log, "repos": root / "mirrors"}
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def relay(mirror):
    server = start_relay(mirror["port"])
    yield server
    server.shutdown()
    server.server_close()


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("lit_hf: error:")]
    for needle in needles:
        assert needle in line
    return line


@pytest.mark.parametrize(
    ("repo", "weights"), [("tiny-gpt2", "model.safetensors"), ("tiny-gpt2-bin", "pytorch_model.bin")]
)
def test_download_fetches_one_weight_format(mirror, relay, tmp_path, repo, weights):
    target = tmp_path / "model"
    env = hub_env(tmp_path, relay.url, HF_TOKEN="hf_test_token")
    result = lit_hf("download", f"org/{repo}", "--local_dir", str(target), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(target)
    assert f"--model.model_name_or_path={target}" in result.stderr
    assert "Fetching 6 files: 100%" in result.stderr  # huggingface_hub's progress bar
    source = mirror["repos"] / "models" / "org" / repo
    assert files_in(target) == MODEL_FILES | {weights}
    assert {
        Path(entry["path"]).name for entry in relay.log if entry["method"] == "GET" and "/resolve/" in entry["path"]
    } == MODEL_FILES | {weights}
    for name in files_in(target):
        assert sha256(target / name) == sha256(source / name), name
    assert {entry["authorization"] for entry in relay.log} == {"Bearer hf_test_token"}
    loaded = AutoModelForCausalLM.from_pretrained(target).state_dict()
    for name, tensor in tiny_gpt2().state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_download_resumes_and_keeps_finished_files(mirror, relay, tmp_path):
    """A download whose weights fail (HTTP 500) ends in one line; the rerun fetches only the unfinished file, and a
    connection dropped mid-file is retried with a Range request from the last whole chunk received."""
    target, env = tmp_path / "model", hub_env(tmp_path, relay.url)
    relay.failing.add("model.safetensors")
    first = lit_hf("download", "org/tiny-gpt2", "--local_dir", str(target), env=env)
    assert_one_line_error(first, "org/tiny-gpt2", "Run the same command again")
    assert files_in(target) == MODEL_FILES  # everything but the weights
    relay.log.clear()
    relay.failing.clear()
    relay.cuts["model.safetensors"] = [10 * CHUNK + 500_000]  # once, after one whole chunk
    second = lit_hf("download", "org/tiny-gpt2", "--local_dir", str(target), env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    gets = [entry for entry in relay.log if entry["method"] == "GET" and "/resolve/" in entry["path"]]
    assert [Path(entry["path"]).name for entry in gets] == ["model.safetensors"] * 2
    assert gets[1]["range"] == f"bytes={10 * CHUNK}-"  # hf_hub keeps what it received in whole 10 MiB chunks
    assert sha256(target / "model.safetensors") == sha256(mirror["repos"] / "models/org/tiny-gpt2/model.safetensors")


def test_download_dataset_through_a_proxy(mirror, relay, tmp_path, data_dir, gpt2_tokenizer):
    """HF_ENDPOINT names a host that does not resolve; HTTP_PROXY reaches the mirror: probe and downloads use it.
    The printed folder, given as `dataset_name`, gives the blocks of the same lines tokenized one by one."""
    env = hub_env(tmp_path, "http://hub.mirror.invalid", HTTP_PROXY=relay.url)
    result = lit_hf("download", "org/tiny-wikitext", "--repo_type", "dataset", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = result.stdout.strip()
    assert f"--data.dataset_name={folder}" in result.stderr
    assert relay.log and all(entry["proxied"] for entry in relay.log)
    parquet = {f"data/{split}-00000-of-00001.parquet" for split in ("train", "validation")}
    assert files_in(Path(folder)) == {"README.md"} | parquet
    data = LanguageModelingDataModule(
        hub=HubOptions(tokenizer_name=str(mirror["repos"] / "models/org/tiny-gpt2")),  # config.json + the GPT-2 files
        dataset_name=folder,
        block_size=32,
        data_cache_dir=str(tmp_path / "cache"),
    )
    data.prepare_data()
    data.setup("fit")
    text = tmp_path / "train.txt"
    text.write_text("".join((data_dir / "wikitext/wikitext-2/valid.txt").read_text().splitlines(True)[:60]))
    np.testing.assert_array_equal(data.datasets["train"]["input_ids"], reference_blocks(text, gpt2_tokenizer, 32))


STREAM = """import json, sys
from lit_hf.data import LanguageModelingDataModule
from lit_hf.options import HubOptions
dm = LanguageModelingDataModule(hub=HubOptions(tokenizer_name=sys.argv[1]), dataset_name="org/tiny-wikitext",
    streaming=True, block_size=32, batch_size=2, data_cache_dir=sys.argv[2])
dm.prepare_data(); dm.setup("fit")
train = [block for batch in dm.train_dataloader() for block in batch["input_ids"].tolist()]
print(json.dumps({"train": train, "validation": [b.tolist() for b in dm.datasets["validation"]["input_ids"]]}))
"""


def test_streaming_a_hub_dataset_through_the_mirror(mirror, tmp_path, data_dir, gpt2_tokenizer):
    """--data.streaming=true by hub id: the train split's blocks are read from the mirror as a stream (nothing of it
    in the datasets cache), the validation split cached; both are the lines' blocks tokenized one by one."""
    env = hub_env(tmp_path, f"http://127.0.0.1:{mirror['port']}")
    args = [str(mirror["repos"] / "models/org/tiny-gpt2"), str(tmp_path / "cache")]
    done = subprocess.run([sys.executable, "-c", STREAM, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    lines = (data_dir / "wikitext/wikitext-2/valid.txt").read_text().splitlines(True)[:LINES]
    for split, part in (("train", lines[:60]), ("validation", lines[60:])):
        (tmp_path / f"{split}.txt").write_text("".join(part))
    want = reference_blocks(tmp_path / "train.txt", gpt2_tokenizer, 32)
    assert len(got["train"]) == len(want) // 2 * 2 > 10
    np.testing.assert_array_equal(got["train"], want[: len(got["train"])])
    np.testing.assert_array_equal(got["validation"], reference_blocks(tmp_path / "validation.txt", gpt2_tokenizer, 32))
    assert not list((tmp_path / "hf").rglob("*train*.arrow")) and not list((tmp_path / "cache").rglob("*train*"))


def test_fit_by_hub_ids_through_the_mirror(mirror, tmp_path):
    env = hub_env(tmp_path, f"http://127.0.0.1:{mirror['port']}")
    start = mirror["log"].stat().st_size
    result = lit_hf(
        "fit",
        "--model=lit_hf.tasks.CausalLMTask",
        "--model.model_name_or_path=org/tiny-gpt2",
        "--data=lit_hf.data.LanguageModelingDataModule",
        "--data.dataset_name=org/tiny-wikitext",
        "--data.block_size=32",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        "--trainer.max_steps=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_results(tmp_path)["global_step"] == 2
    served = mirror["log"].read_text()[start:]
    for path in ("/org/tiny-gpt2/resolve/", "model.safetensors", "/datasets/org/tiny-wikitext/resolve/", "train-0"):
        assert path in served, path


@pytest.mark.parametrize("why", ["stopped", "offline-mode"])
def test_stopped_mirror_or_offline_mode_gives_one_line(mirror, monkeypatch, capsys, why):
    """In-process (the checks come before any hub call): `main` exits 2 after one line naming the way out."""
    import huggingface_hub.constants

    from lit_hf.hub import hub_reachable

    relay = start_relay(mirror["port"])
    relay.shutdown()
    relay.server_close()  # nothing listens on its port now
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", relay.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", why == "offline-mode")
    hub_reachable.cache_clear()
    with pytest.raises(SystemExit) as exit_info:
        main(["download", "org/tiny-gpt2"])
    hub_reachable.cache_clear()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lit_hf: error: Cannot download 'org/tiny-gpt2': ")
    assert ("HF_HUB_OFFLINE=1" if why == "offline-mode" else f"{relay.url.removeprefix('http://')} within 3 s") in line


PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.mark.parametrize(
    ("endpoint", "env", "want"),
    [
        ("http://mirror.example", {}, ("mirror.example", 80)),
        ("https://mirror.example", {}, ("mirror.example", 443)),
        ("http://mirror.example:8090", {}, ("mirror.example", 8090)),
        ("https://huggingface.co", {"HTTPS_PROXY": "http://proxy.corp:3128"}, ("proxy.corp", 3128)),
        ("https://huggingface.co", {"HTTPS_PROXY": "proxy.corp:3128"}, ("proxy.corp", 3128)),
        ("https://huggingface.co", {"HTTP_PROXY": "http://proxy.corp:3128"}, ("huggingface.co", 443)),
        ("http://mirror.example", {"HTTP_PROXY": "http://proxy.corp"}, ("proxy.corp", 80)),
        ("https://huggingface.co", {"ALL_PROXY": "socks5://proxy.corp"}, ("proxy.corp", 1080)),
        (
            "https://huggingface.co",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "huggingface.co"},
            ("huggingface.co", 443),
        ),
        (
            "http://hub.corp.example:81",
            {"HTTP_PROXY": "http://p:1", "NO_PROXY": ".corp.example"},
            ("hub.corp.example", 81),
        ),
        ("http://mirror.example", {"HTTP_PROXY": "http://p:1", "NO_PROXY": "other.example"}, ("p", 1)),
    ],
)
def test_probe_goes_to_the_endpoint_port_or_its_proxy(monkeypatch, endpoint, env, want):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert probe_address(endpoint) == want


SAFETENSORS_REPO = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]
BIN_REPO = ["config.json", "pytorch_model.bin", "pytorch_model.bin.index.json", "flax_model.msgpack"]


@pytest.mark.parametrize(
    ("argv", "files", "want"),
    [
        (["org/m"], SAFETENSORS_REPO, {"config.json", "model.safetensors"}),
        (["org/m"], BIN_REPO, {"config.json", "pytorch_model.bin", "pytorch_model.bin.index.json"}),
        (["org/m", "--exclude", "*.json"], SAFETENSORS_REPO, {"model.safetensors"}),
        (["org/m", "--include", "*.h5", "*.json"], SAFETENSORS_REPO, {"config.json", "tf_model.h5"}),
        (["org/d", "--repo_type", "dataset"], SAFETENSORS_REPO, set(SAFETENSORS_REPO)),
    ],
)
def test_selection_rules(argv, files, want):
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = selection(parser().parse_args(argv), files)
    assert set(filter_repo_objects(files, allow_patterns=allow, ignore_patterns=ignore)) == want
