"""A real hub mirror for tests: olah serving git repositories built here, and a recording relay in front of it."""

import asyncio
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit_repo(path: Path) -> None:
    """`path` as a git repository with one commit on `main`: the layout olah's `mirrors-path` serves."""
    git = [
        "git",
        "-C",
        str(path),
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "-c",
        "core.compression=0",
    ]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "tiny test repository"], check=True)


def seed_branch(cache: Path, repo_type: str, org: str, name: str, git_dir: Path) -> None:
    """Tell olah where `main` points, as it records after serving a repo online.

    Offline, olah resolves a branch name only from its own cache, not from the mirrored git repository: without
    this, a file missing from the repo gives 401 (repository not found) instead of 404, and transformers' probes
    for optional files (chat templates, `vocab.json`) end the load.
    """
    from olah.mirror.repos import LocalMirrorRepo
    from olah.utils.cache_utils import write_cache_request
    from olah.utils.repo_utils import get_meta_save_dir, get_resolved_commit_save_path

    meta = LocalMirrorRepo(str(git_dir), repo_type, org, name).get_meta("main")
    head = Path(get_meta_save_dir(str(cache), repo_type, org, name)) / meta["sha"] / "meta_head.json"
    head.parent.mkdir(parents=True, exist_ok=True)
    head.write_text(json.dumps(meta))  # the newest commit, for `/api/{type}/{repo}` without a revision
    resolved = Path(get_resolved_commit_save_path(str(cache), repo_type, org, name, "main"))
    resolved.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(write_cache_request(str(resolved), 200, {}, meta["sha"].encode()))


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"olah exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"olah did not listen on {port}: {log.read_text()[-2000:]}")


def start_olah(root: Path, mirrors: Path) -> tuple[subprocess.Popen, int, Path]:
    """olah on 127.0.0.1 in offline mode (it never contacts huggingface.co), serving the git repos under `mirrors`."""
    port, log = free_port(), root / "olah.log"
    config = root / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "cache"}"\n'
        f'mirrors-path = ["{mirrors}"]\n[accessibility]\noffline = true\n'
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(root / "logs")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    wait_for_port(port, process, log)
    return process, port, log


class Relay(ThreadingHTTPServer):
    """An HTTP relay (also usable as a forward proxy) in front of the mirror that records every request and can cut
    a file's response short, as a dropped connection would, or fail it with HTTP 500.

    It reads each upstream response whole and sends it with a Content-Length, so a cut is a short body.
    """

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), RelayHandler)
        self.upstream_port = upstream_port
        self.log: list[dict] = []  # method, path, range, status, sent (body bytes), proxied, authorization
        self.cuts: dict[str, list[int]] = {}  # file name -> bytes to send, one entry per response to cut
        self.failing: set[str] = set()  # file names answered with HTTP 500
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, method: str, name: str) -> list[dict]:
        return [entry for entry in self.log if entry["method"] == method and entry["path"].endswith("/" + name)]


class RelayHandler(BaseHTTPRequestHandler):
    server: Relay

    def do_GET(self) -> None:
        self.relay()

    def do_HEAD(self) -> None:
        self.relay()

    def do_POST(self) -> None:
        self.relay()

    def relay(self) -> None:
        path = urlsplit(self.path)._replace(scheme="", netloc="").geturl()  # a proxy request names the whole URL
        if self.command == "GET" and path.split("?")[0].rpartition("/")[2] in self.server.failing:
            self.send_error(500)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream.request(self.command, path, body=body or None, headers=headers)
        response = upstream.getresponse()
        content = response.read()
        cut = self.cut_for(path)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", response.getheader("Content-Length", str(len(content))))
        self.end_headers()
        sent = content if self.command == "HEAD" else content[:cut]
        self.wfile.write(sent)
        with self.server.lock:
            self.server.log.append(
                {"method": self.command, "path": path, "range": self.headers.get("Range"), "status": response.status}
                | {"sent": 0 if self.command == "HEAD" else len(sent), "proxied": self.path.startswith("http")}
                | {"authorization": self.headers.get("Authorization")}
            )
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def cut_for(self, path: str) -> int | None:
        if self.command != "GET":
            return None
        with self.server.lock:
            for name, cuts in self.server.cuts.items():
                if path.split("?")[0].endswith("/" + name) and cuts:
                    return cuts.pop(0)
        return None

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_relay(upstream_port: int) -> Relay:
    relay = Relay(upstream_port)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    return relay


def hub_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The environment for a lit_hf subprocess that talks to `endpoint`, with a private, empty cache."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    cache = tmp_path / "hf"
    return env | {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HOME": str(cache),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def lit_hf(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_hf", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(source / name, target / name)
