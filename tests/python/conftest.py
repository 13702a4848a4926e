"""Starts the real inferd binary once per test session, serving tests/fixtures/models.

The binary is $INFERD_BIN, default $CARGO_TARGET_DIR/release/inferd (CARGO_TARGET_DIR defaults
to ~/.cache/inferd/target, as in scripts/setup.sh). ORT_DYLIB_PATH is passed through; when it is
unset, the libonnxruntime.so shipped in the installed onnxruntime wheel is used.
"""

import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL_REPOSITORY = FIXTURES / "models"
REFERENCE = FIXTURES / "reference.json"
CACHE = Path(os.environ.get("INFERD_CACHE") or Path.home() / ".cache" / "inferd")

STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 30
LOG_TAIL_LINES = 200

_server_log = {"path": None}


def inferd_binary():
    explicit = os.environ.get("INFERD_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "inferd" / "target")
    return Path(target) / "release" / "inferd"


def server_env():
    env = dict(os.environ)
    if not env.get("ORT_DYLIB_PATH"):
        try:
            import onnxruntime

            capi = Path(onnxruntime.__file__).parent / "capi"
            libs = sorted(glob.glob(str(capi / "libonnxruntime.so*")))
            if libs:
                env["ORT_DYLIB_PATH"] = libs[0]
        except ImportError:
            pass
    return env


def minilm_dir():
    """The sentence encoder scripts/setup.sh installs (all-MiniLM-L6-v2, one version directory)."""
    d = CACHE / "models" / "all-MiniLM-L6-v2" / "1"
    if not (d / "model.safetensors").is_file():
        pytest.fail(f"{d} is missing: run scripts/setup.sh")
    return d


def launch_minilm(tmp_path_factory, tag, key, scopes):
    """inferd serving the sentence encoder as `minilm`, with one API key (principal `tag`)."""
    repo = tmp_path_factory.mktemp(f"{tag}-repo")
    (repo / "minilm").mkdir()
    (repo / "minilm" / "1").symlink_to(minilm_dir())
    keys = tmp_path_factory.mktemp(f"{tag}-keys") / "keys.json"
    keys.write_text(json.dumps({"keys": [
        {"name": tag, "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes}]}))
    return launch(repo, tmp_path_factory.mktemp(f"{tag}-data"), auth=("--api-keys", str(keys)))


def brute(data, q, metric, k, keep=None):
    """Ids (row indices) of the k nearest rows of `data` to `q` among those `keep` accepts,
    and their scores as Qdrant defines them: cosine and dot similarity, Euclidean distance."""
    ids = [i for i in range(len(data)) if keep is None or keep(i)]
    x = data[ids]
    q = np.asarray(q)
    if metric == "cosine":
        s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        order = np.argsort(-s, kind="stable")
    elif metric == "dot":
        s = x @ q
        order = np.argsort(-s, kind="stable")
    else:
        s = np.linalg.norm(x - q, axis=1)
        order = np.argsort(s, kind="stable")
    return [ids[i] for i in order[:k]], [float(s[i]) for i in order[:k]]


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (the sockets are held until all are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<cannot read server log {path}: {e}>"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail)


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    data_dir: Path

    @property
    def http_url(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"


def _http_ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def reference():
    if not REFERENCE.exists():
        pytest.fail(f"{REFERENCE} is missing; run `python tests/fixtures/gen_models.py`")
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def launch(model_repository, data_dir, extra=(), auth=("--no-auth",)):
    """Starts inferd on free ports and waits until it is ready; fails the test otherwise."""
    binary = inferd_binary()
    if not binary.is_file():
        pytest.fail(
            f"inferd binary not found at {binary}: build it (cargo build --release) "
            "or point INFERD_BIN at it"
        )
    http_port, grpc_port, metrics_port = free_ports(3)
    fd, log_name = tempfile.mkstemp(prefix="inferd-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    _server_log["path"] = log_path
    cmd = [
        str(binary),
        "serve",
        *auth,
        "--model-repository",
        str(model_repository),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--data-dir",
        str(data_dir),
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=server_env()
        )

    srv = Server(proc, http_port, grpc_port, metrics_port, log_path, data_dir)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        rc = proc.poll()
        if rc is not None:
            pytest.fail(
                f"inferd exited with status {rc} before becoming ready\n"
                f"command: {' '.join(cmd)}\n--- server output ---\n{log_tail(log_path)}"
            )
        if _http_ready(http_port) and _tcp_open(grpc_port):
            return srv
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(
                f"inferd not ready on http://127.0.0.1:{http_port}/v2/health/ready (and gRPC "
                f"port {grpc_port}) within {STARTUP_TIMEOUT_S} s\ncommand: {' '.join(cmd)}\n"
                f"--- server output ---\n{log_tail(log_path)}"
            )
        time.sleep(0.1)


def stop(srv):
    rc = _stop(srv.process)
    if rc is None:
        warnings.warn(f"inferd did not exit within {SHUTDOWN_TIMEOUT_S} s of SIGTERM; killed it")
    elif rc != 0:
        warnings.warn(f"inferd exited with status {rc} after SIGTERM (log: {srv.log_path})")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if not MODEL_REPOSITORY.is_dir():
        pytest.fail(f"{MODEL_REPOSITORY} is missing; run `python tests/fixtures/gen_models.py`")
    srv = launch(MODEL_REPOSITORY, tmp_path_factory.mktemp("inferd-data"))
    yield srv
    stop(srv)


def _stop(proc):
    """SIGTERM, wait; SIGKILL if it hangs. Returns the exit status, None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.fixture(scope="session")
def http_client(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        server.http_url, connection_timeout=10.0, network_timeout=30.0
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = _server_log["path"]
    if path is None:
        return
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        terminalreporter.section(f"inferd server output (last {LOG_TAIL_LINES} lines of {path})")
        terminalreporter.write_line(log_tail(path))
