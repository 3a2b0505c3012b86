"""`python -m lit_hf download REPO_ID`: one weight format of a hub repo into a local directory, ready for `fit`."""

import argparse
import sys
from fnmatch import fnmatch
from typing import NoReturn

import huggingface_hub
import huggingface_hub.constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import filter_repo_objects

from lit_hf.errors import LitHFError, first_line
from lit_hf.hub import hub_reachable, is_offline, probe_address

# Weights for frameworks lit_hf does not run: TensorFlow, Flax, Rust, ONNX, Core ML (model repos only).
OTHER_FRAMEWORKS = [
    "*.h5",
    "tf_model*",
    "*.tflite",
    "saved_model/*",
    "*.msgpack",
    "flax_model*",
    "*.ot",
    "rust_model*",
    "*.onnx",
    "*.onnx_data",
    "onnx/*",
    "*.mlmodel",
    "*.mlpackage/*",
    "coreml/*",
]
PYTORCH_PICKLES = ["*.bin", "*.bin.index.json"]  # skipped when the repo has safetensors: the same weights, safer
# hf_hub's own HTTP client errors (httpx2.HTTPError) are not OSErrors; its HfHubHTTPError is both.
NETWORK_ERRORS = (OSError, *HfHubHTTPError.__bases__)


def default_excludes(files: list[str]) -> list[str]:
    """Skip other frameworks' weights, and PyTorch pickles when safetensors weights are there instead."""
    has_safetensors = any(fnmatch(name, "*.safetensors") for name in files)
    return OTHER_FRAMEWORKS + (PYTORCH_PICKLES if has_safetensors else [])


def selection(args: argparse.Namespace, files: list[str]) -> tuple[list[str] | None, list[str]]:
    """(allow, ignore) patterns: `--include` alone decides when given; else the defaults (models only) + `--exclude`."""
    if args.include:
        return args.include, args.exclude
    return None, (default_excludes(files) if args.repo_type == "model" else []) + args.exclude


def list_files(args: argparse.Namespace) -> dict[str, int]:
    """Every file in the repo at the revision, with its size in bytes, from the hub's own listing."""
    api = huggingface_hub.HfApi()
    try:
        tree = api.list_repo_tree(args.repo_id, recursive=True, revision=args.revision, repo_type=args.repo_type)
        return {item.path: item.size for item in tree if isinstance(item, huggingface_hub.hf_api.RepoFile)}
    except RevisionNotFoundError as err:
        raise LitHFError(f"{args.repo_id} has no revision {args.revision!r}; check --revision.") from err
    except RepositoryNotFoundError as err:
        raise LitHFError(
            f"No {args.repo_type} repository {args.repo_id!r} at {huggingface_hub.constants.ENDPOINT}: check the id "
            "and --repo_type; private and gated repositories need a token in HF_TOKEN."
        ) from err
    except NETWORK_ERRORS as err:
        raise LitHFError(f"Could not list the files of {args.repo_id!r}: {first_line(err)}") from err


def check_online(repo_id: str) -> None:
    if is_offline():
        raise LitHFError(f"Cannot download {repo_id!r}: offline mode is on (HF_HUB_OFFLINE=1); unset it to download.")
    if not hub_reachable():
        host, port = probe_address(huggingface_hub.constants.ENDPOINT)
        raise LitHFError(
            f"Cannot download {repo_id!r}: {huggingface_hub.constants.ENDPOINT} is unreachable (no connection to "
            f"{host}:{port} within 3 s). Check the network or proxy settings, or point HF_ENDPOINT at a mirror."
        )


def download(args: argparse.Namespace) -> str:
    """Fetches the chosen files with `snapshot_download` (progress bar, retries with resume); returns the folder."""
    check_online(args.repo_id)
    files = list_files(args)
    allow, ignore = selection(args, files)
    chosen = list(filter_repo_objects(files, allow_patterns=allow, ignore_patterns=ignore))
    megabytes = sum(files[name] for name in chosen) / 1e6
    print(f"Fetching {len(chosen)} of {len(files)} files ({megabytes:.1f} MB): {', '.join(chosen)}", file=sys.stderr)
    try:
        return huggingface_hub.snapshot_download(
            args.repo_id,
            repo_type=args.repo_type,
            revision=args.revision,
            local_dir=args.local_dir,
            allow_patterns=allow,
            ignore_patterns=ignore,
        )
    except NETWORK_ERRORS as err:
        raise LitHFError(
            f"Download of {args.repo_id!r} stopped: {first_line(err)}. Run the same command again: finished files are "
            "kept and not fetched twice."
        ) from err


class OneLineParser(argparse.ArgumentParser):
    """argparse's mistakes as a LitHFError (one line, exit 2 in `main`) instead of its usage text and exit."""

    def error(self, message: str) -> NoReturn:
        if "required: repo_id" in message:
            message = f"a repo id is missing, e.g. `{self.prog} openai-community/gpt2`"
        raise LitHFError(f"{message}; `{self.prog} --help` lists the options.")


def parser() -> argparse.ArgumentParser:
    cli = OneLineParser(
        prog="python -m lit_hf download",
        allow_abbrev=False,  # `--rev` is not `--revision`: an option is taken only as written
        description="Download a model or dataset repo from the Hugging Face Hub (or the mirror in HF_ENDPOINT; "
        "HF_TOKEN for private repos). Model repos get one weight format: safetensors when there, else PyTorch *.bin; "
        "TensorFlow, Flax, Rust, ONNX and Core ML files are skipped.",
    )
    cli.add_argument("repo_id", help="e.g. openai-community/gpt2 or Salesforce/wikitext")
    cli.add_argument("--repo_type", choices=["model", "dataset"], default="model", help="default: model")
    cli.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    cli.add_argument("--local_dir", default=None, help="a plain folder for the files, instead of the HF_HOME cache")
    cli.add_argument(
        "--include",
        nargs="+",
        default=[],
        action="extend",
        metavar="PAT",
        help="fetch only files matching (no defaults)",
    )
    cli.add_argument(
        "--exclude", nargs="+", default=[], action="extend", metavar="PAT", help="also skip files matching"
    )
    return cli


def download_main(args: list[str]) -> None:
    """`python -m lit_hf download ...`: prints the folder and the option that uses it (lit_hf/cli/dispatch.py turns
    a LitHFError into its one line)."""
    options = parser().parse_args(args)
    folder = download(options)
    use = "--model.model_name_or_path" if options.repo_type == "model" else "--data.dataset_name"
    print(folder)
    print(f"Use it with: {use}={folder}", file=sys.stderr)
