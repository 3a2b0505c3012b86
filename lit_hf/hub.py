"""Hub access that fails within seconds when offline, with one message naming the model or dataset and the way out."""

import functools
import os
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import huggingface_hub.constants

from lit_hf.errors import LitHFError

T = TypeVar("T")

WAY_OUT = (
    "Pass a local directory instead, pre-fill the cache where the network is available "
    "(`python -m lit_hf download {name}` with HF_HOME pointing at the cache), or point HF_ENDPOINT at a reachable "
    "mirror."
)
# A folder AutoTokenizer cannot read: raw vocabulary files without tokenizer.json (what transformers 5 says then).
RAW_TOKENIZER = "Couldn't instantiate the backend tokenizer"
RAW_WAY_OUT = (
    " Raw vocabulary files (vocab.txt, vocab.json + merges.txt, spiece.model) become a tokenizer folder with "
    "docs/from-hf-scripts.md's two lines."
)


def is_offline() -> bool:
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}


def probe_address(endpoint: str) -> tuple[str, int]:
    """Where the first connection to `endpoint` goes: its proxy when one applies, else the endpoint itself.

    The proxy is chosen from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY as requests and httpx choose it;
    the port is the URL's own, else its scheme's (`http://host` is port 80, not 443).
    """
    url = urlparse(endpoint)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.netloc):
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "", url.port or DEFAULT_PORTS.get(url.scheme, 443)


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the endpoint (or its proxy); the hub libraries would otherwise retry for half a minute."""
    try:
        with socket.create_connection(probe_address(huggingface_hub.constants.ENDPOINT), timeout=timeout):
            return True
    except OSError:
        return False


def use_offline_mode_if_unreachable() -> None:
    """Switch this process (and its children) to offline mode when the hub cannot be reached, so cached files load."""
    if is_offline() or hub_reachable():
        return
    import datasets.config  # here, not at the top: `download` needs only huggingface_hub

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists()


def from_hub(load: Callable[..., T], name_or_path: str, what: str, **kwargs: object) -> T:
    """Calls a `from_pretrained`-style loader and turns network and missing-file failures into one clear error."""
    if not is_local(name_or_path):
        if "/" in name_or_path and name_or_path.startswith((".", "/", "~")):
            raise LitHFError(f"The {what} directory {name_or_path!r} does not exist.")
        use_offline_mode_if_unreachable()
    try:
        return load(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise LitHFError(_explain(name_or_path, what, err)) from err


def _explain(name_or_path: str, what: str, err: Exception) -> str:
    if is_local(name_or_path):
        way_out = RAW_WAY_OUT if RAW_TOKENIZER in str(err) else ""
        return f"Could not load the {what} from the local directory {name_or_path!r}: {whole(err)}{way_out}"
    where = "offline mode is on" if is_offline() else "the Hugging Face Hub could not be reached"
    if isinstance(err, OSError) and ("connect" in str(err) or "offline" in str(err).lower() or is_offline()):
        return f"Could not load the {what} {name_or_path!r}: {where} and it is not in the cache. " + WAY_OUT.format(
            name=name_or_path
        )
    return f"Could not load the {what} {name_or_path!r}: {whole(err)}"


def whole(err: BaseException) -> str:
    """The exception's whole message on one line: transformers spreads a cause over several (the tokenizer's list
    of what it tried), and their first line alone ends in "one of: "."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
