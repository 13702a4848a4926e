#!/usr/bin/env python3
"""REST load benchmark for inferd's serving core (run it through benches/load/run.sh).

Serves the digits-sized MLP (tests/fixtures/models/mlp: FP32 [-1,64] -> [-1,10]) with
  - inferd, dynamic batching on (the default),
  - inferd, batching off (a copy of the model with config.toml `max_batch_size = 0`),
  - inferd with an API key required on every request (--api-keys), with a JWT (RS256, against a
    JWKS file) on every request, and over TLS (`https`, a P-256 certificate; wrk's connections
    are kept alive, so this is the record layer's cost, not handshakes); --skip-auth leaves
    the three out,
  - inferd writing a JSON access-log line per request (--access-log --log-format json, to its
    log file); --skip-access-log leaves it out,
  - inferd with a drift monitor sampling every request, and one sampling 10% of them (reference
    captured from the first 1,000 sampled rows, 1,000-row windows; --skip-drift leaves them out);
  - inferd with an A/B experiment of two arms running on the model (versions 1 and 2, the same
    model.onnx, 50/50, no unit key: one random assignment per request; --skip-experiment
    leaves it out),
  - the bare axum baseline (benches/load/bare_axum.rs: parses the V2 JSON, returns a fixed body),
  - the bare tonic baseline (benches/load/bare_tonic.rs: Triton's GRPCInferenceService with
    fixed replies), driven by perf_analyzer over gRPC as inferd is (--skip-perf-analyzer
    leaves it out),
  - Seldon MLServer with a small ONNX Runtime custom runtime (benches/load/mlserver/),
one server at a time, and drives each with wrk over REST at every concurrency (default 1, 8, 32
connections) with the same V2 JSON request (one row of 64 floats): a warmup, then a timed run.
inferd (batching on) is also driven by perf_analyzer over HTTP (binary tensors) and gRPC, which
adds the server-side queue/compute breakdown from /v2/models/mlp/stats. Prints a markdown report
and writes it, with every raw log, under $INFERD_CACHE/bench/load-<timestamp>/.

Standard library only. Every server is started in its own process group and stopped on exit,
error or signal; every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import hashlib
import csv
import datetime as dt
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODEL = "mlp"
MODEL_ONNX = ROOT / "tests" / "fixtures" / "models" / MODEL / "1" / "model.onnx"


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The API key of the inferd row that runs with authentication on (see --skip-auth).
BENCH_KEY = "inferd_bench_key_0123456789abcdef"


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0,
         key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    # The TLS row's certificate is self-signed, on loopback: not verified here (nor by wrk).
    ctx = None
    if url.startswith("https://"):
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------------------------
# CPU accounting: the load generator and the server share this machine, so every measurement
# records how many cores each used, and how much went to anything else (a build, say).

CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_MAX = float(os.environ.get("BENCH_OTHER_MAX", 0.2))  # cores others may take during a measurement


def cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / CLK_TCK


def proc_cpu_s(pgid: int | None) -> float:
    """CPU seconds of a process group (a server and whatever it spawned), threads and
    waited-for children included."""
    if pgid is None:
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
            if int(f[2]) == pgid:
                total += sum(int(x) for x in f[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """Cores used by the server, by the load generator (a child we wait for) and by the rest."""

    def __init__(self, server_pid: int | None):
        self.pid = server_pid
        self.t, self.busy, self.srv, self.kids = time.monotonic(), cpu_busy_s(), proc_cpu_s(server_pid), children_cpu_s()

    def read(self) -> tuple[float, float, float]:
        wall = time.monotonic() - self.t
        srv = proc_cpu_s(self.pid) - self.srv
        client = children_cpu_s() - self.kids
        other = cpu_busy_s() - self.busy - srv - client
        return srv / wall, client / wall, max(0.0, other / wall)


def wait_quiet(limit_s: float) -> str:
    """Waits (up to limit_s) until the machine has been idle, apart from us, for two 2-second
    samples in a row (a build has lulls); says how idle it was."""
    deadline = time.monotonic() + limit_s
    calm = 0
    while True:
        b0, t0 = cpu_busy_s(), time.monotonic()
        time.sleep(2)
        used = (cpu_busy_s() - b0) / (time.monotonic() - t0)
        calm = calm + 1 if used < OTHER_MAX else 0
        if calm >= 2:
            return f"{used:.2f} cores busy before the run"
        if time.monotonic() >= deadline:
            log(f"warning: the machine stays busy ({used:.2f} cores); measuring anyway")
            return f"**{used:.2f} cores busy with other work before the run: numbers are disturbed**"
        if not calm:
            log(f"machine busy ({used:.2f} cores in use by other processes); waiting for it to go quiet")
            time.sleep(3)


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    key: str  # short id
    label: str  # shown in the tables
    argv: list[str]
    cwd: Path
    log_path: Path
    infer_url: str
    ready_url: str | None  # GET that answers 200 when ready; None: probe with an inference
    metrics_url: str | None = None
    grpc_port: int | None = None
    http_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 90.0
    # (method, url, JSON body) calls made once the server is ready, each must answer 2xx.
    setup_calls: list[tuple[str, str, bytes]] = field(default_factory=list)
    # The API key every request sends (the authenticated row), or None.
    api_key: str | None = None
    # Serves gRPC only (bare tonic): ready when its port accepts, measured by perf_analyzer.
    grpc_only: bool = False
    proc: subprocess.Popen | None = None

    def start(self, body: bytes) -> None:
        log(f"starting {self.label}: {' '.join(self.argv)}")
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.label} exited with status {self.proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if self.grpc_only:
                    with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1.0):
                        code = 200
                elif self.ready_url is not None:
                    code, _ = http("GET", self.ready_url, timeout=1.0, key=self.api_key)
                else:
                    code, _ = http("POST", self.infer_url, body, timeout=1.0, key=self.api_key)
                if code == 200:
                    log(f"{self.label} ready (pid {self.proc.pid})")
                    for method, url, payload in self.setup_calls:
                        c, out = http(method, url, payload, key=self.api_key)
                        if not 200 <= c < 300:
                            raise BenchError(f"{self.label}: {method} {url} answered {c}: {out[:500]!r}")
                    return
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                pass
            time.sleep(0.2)
        raise BenchError(
            f"{self.label} not ready after {self.start_timeout_s:.0f} s; last lines of "
            f"{self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        log(f"stopping {self.label} (pid {p.pid})")
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except ProcessLookupError:
            pass


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Load generators


@dataclass
class Row:
    server: str
    tool: str  # "wrk (REST JSON)", "perf_analyzer (HTTP binary)", ...
    conc: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    note: str = ""
    server_side: str = ""  # perf_analyzer's server-side breakdown
    cpu: tuple[float, float, float] | None = None  # cores: server, load generator, other


def run_wrk(url: str, conc: int, seconds: float, body_path: Path, out_log: Path, server_pid: int | None = None,
            key: str | None = None) -> Row:
    threads = max(1, min(conc, int(os.environ.get("BENCH_WRK_THREADS", "2"))))
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    argv = [
        "wrk", f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(HERE / "post.lua"), url,
    ]
    meter = CpuMeter(server_pid)
    try:
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30,
            env={**os.environ, "BENCH_BODY": str(body_path), **({"BENCH_AUTH": f"Bearer {key}"} if key else {})},
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk did not finish in {seconds + 30:.0f} s: {' '.join(argv)}") from e
    with open(out_log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}\n")
    m = re.search(r"^RESULT (.*)$", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise BenchError(f"wrk failed (status {r.returncode}): {r.stdout}{r.stderr}")
    cpu = meter.read()
    kv = {k: float(v) for k, v in (p.split("=") for p in m.group(1).split())}
    errors = int(sum(kv[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")))
    return Row(
        server="", tool="wrk (REST JSON)", conc=conc,
        rps=kv["requests"] / (kv["duration_us"] / 1e6),
        p50_ms=kv["p50_us"] / 1000, p99_ms=kv["p99_us"] / 1000, errors=errors,
        note=f"{int(kv['requests'])} requests" + (f", {errors} errors" if errors else ""), cpu=cpu,
    )


def run_perf_analyzer(protocol: str, addr: str, conc: int, seconds: float, out_dir: Path, server_pid: int | None = None,
                      tag: str = "inferd") -> tuple[Row, str]:
    """One concurrency level; returns the row and perf_analyzer's text summary for the report."""
    csv_path = out_dir / f"pa-{tag}-{protocol}-c{conc}.csv"
    window_ms = max(1000, int(seconds * 1000 / 3))  # 3 stable windows ~ the wrk duration
    argv = [
        str(ROOT / "scripts" / "perf_analyzer.sh"), "-m", MODEL, "-u", addr, "-i", protocol,
        "--concurrency-range", str(conc), "--measurement-interval", str(window_ms),
        "--stability-percentage", os.environ.get("BENCH_PA_STABILITY", "25"), "--max-trials", "8",
        "-f", str(csv_path),
    ]
    limit = 20 + 9 * window_ms / 1000
    meter = CpuMeter(server_pid)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        out, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"{e.stdout or ''}{e.stderr or ''}\n(killed after {limit:.0f} s)", -1
        out = out if isinstance(out, str) else out.decode(errors="replace")
    (out_dir / f"pa-{tag}-{protocol}-c{conc}.log").write_text(f"$ {' '.join(argv)}\n{out}")
    tool = {"http": "perf_analyzer (HTTP binary)", "grpc": "perf_analyzer (gRPC)"}[protocol]
    row = Row(server="", tool=tool, conc=conc, cpu=meter.read())
    summary = summarize_pa(out)
    if rc != 0 or not csv_path.exists():
        reason = next((l.strip() for l in out.splitlines() if "Failed" in l or "error" in l.lower()), f"status {rc}")
        row.note = f"no result: {reason}"
        return row, summary
    rec = next(csv.DictReader(io.StringIO(csv_path.read_text())))
    row.rps = float(rec["Inferences/Second"])
    row.p50_ms = float(rec["p50 latency"]) / 1000
    row.p99_ms = float(rec["p99 latency"]) / 1000
    us = lambda k: float(rec.get(k) or 0)  # noqa: E731
    row.server_side = (
        f"queue {us('Server Queue'):.0f} + compute in {us('Server Compute Input'):.0f} / "
        f"infer {us('Server Compute Infer'):.0f} / out {us('Server Compute Output'):.0f} µs; "
        f"client send {us('Client Send'):.0f}, network+server {us('Network+Server Send/Recv'):.0f}, "
        f"client recv {us('Client Recv'):.0f} µs"
    )
    m = re.search(r"Inference count: (\d+)\s+Execution count: (\d+)", out)
    if m and int(m.group(2)):
        row.note = f"avg batch {int(m.group(1)) / int(m.group(2)):.2f}"
    return row, summary


def summarize_pa(out: str) -> str:
    """perf_analyzer's per-concurrency block (Client/Server lines), as printed."""
    lines = out.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("Request concurrency:")), None)
    if start is None:
        return "\n".join(l for l in lines if l.strip())[-2000:]
    keep = []
    for l in lines[start:]:
        if l.startswith("Inferences/Second vs."):
            break
        if l.strip():
            keep.append(l.rstrip())
    return "\n".join(keep)


# ---------------------------------------------------------------------------------------------
# inferd's batch-size histogram


def batch_hist(metrics_url: str) -> dict[str, float]:
    code, text = http("GET", metrics_url)
    if code != 200:
        raise BenchError(f"GET {metrics_url}: {code}")
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if not line.startswith("inferd_inference_batch_size") or f'model="{MODEL}"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        m = re.search(r'le="([^"]+)"', name)
        key = m.group(1) if m else name.split("{")[0].rsplit("_", 1)[-1]  # sum / count
        out[key] = float(value)
    if "count" not in out:
        raise BenchError(f"no inferd_inference_batch_size series for model {MODEL} at {metrics_url}")
    return out


def hist_delta(before: dict[str, float], after: dict[str, float]) -> str:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    count, total = d.pop("count", 0), d.pop("sum", 0)
    buckets = sorted(d.items(), key=lambda kv: float("inf") if kv[0] == "+Inf" else float(kv[0]))
    rows, prev, prev_le = [], 0.0, 0.0
    for le, cum in buckets:
        n = cum - prev
        lo = int(prev_le) + 1
        if le == "+Inf":
            span = f"> {int(prev_le)}"
        else:
            span = str(lo) if lo == int(float(le)) else f"{lo}–{int(float(le))}"
        if n:
            rows.append(f"| {span} | {int(n)} | {100 * n / count:.1f}% |")
        prev, prev_le = cum, (prev_le if le == "+Inf" else float(le))
    mean = total / count if count else 0
    return (
        f"{int(count)} executions for {int(total)} requests (mean batch {mean:.2f} rows):\n\n"
        "| batch rows | executions | share |\n|---|---|---|\n" + "\n".join(rows)
    )


# ---------------------------------------------------------------------------------------------
# Report


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else format(v, spec) + suffix


def cpu_cell(cpu: tuple[float, float, float] | None) -> str:
    if cpu is None:
        return "—"
    srv, gen, other = cpu
    return f"{srv:.2f} / {gen:.2f} / {other:.2f}" + (" ⚠" if other > OTHER_MAX else "")


def ratio(a: Row | None, b: Row | None) -> float | None:
    if a is None or b is None or not a.rps or not b.rps:
        return None
    return a.rps / b.rps


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, {platform.system()} {platform.release()}"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 10)), help="seconds per measurement (default 10)")
    ap.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 3)), help="seconds of warmup before each measurement (default 3)")
    ap.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "1,8,32"), help="comma-separated connection counts (default 1,8,32)")
    ap.add_argument("--skip-mlserver", action="store_true", help="leave out the MLServer rows")
    ap.add_argument("--skip-perf-analyzer", action="store_true", help="leave out the perf_analyzer rows")
    ap.add_argument("--skip-experiment", action="store_true", help="leave out the inferd-with-an-experiment rows")
    ap.add_argument("--skip-drift", action="store_true", help="leave out the inferd-with-a-drift-monitor row")
    ap.add_argument("--skip-auth", action="store_true", help="leave out the inferd-with-an-API-key row")
    ap.add_argument("--skip-access-log", action="store_true", help="leave out the inferd-with-an-access-log row")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the report and logs go (default $INFERD_CACHE/bench/load-<timestamp>)")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",")]
    top = max(concs)

    for var in ("INFERD_BIN", "BARE_AXUM_BIN", "BARE_TONIC_BIN", "INFERD_CACHE", "ORT_DYLIB_PATH"):
        if not os.environ.get(var):
            raise BenchError(f"{var} is not set; run benches/load/run.sh")
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found (apt-get install wrk; scripts/setup.sh does it when apt is usable)")
    mlserver_bin = Path(os.environ.get("MLSERVER_VENV", "")) / "bin" / "mlserver"
    if not args.skip_mlserver and not mlserver_bin.exists():
        raise BenchError(f"{mlserver_bin} not found; run benches/load/run.sh (it installs MLServer)")

    started = dt.datetime.now(dt.timezone.utc)
    out_dir = args.out_dir or Path(os.environ["INFERD_CACHE"]) / "bench" / f"load-{started:%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="inferd-load-"))
    servers: list[Server] = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    try:
        # The binaries are copied so that a rebuild during the run cannot swap them mid-way.
        bins = work / "bin"
        bins.mkdir()
        inferd = str(shutil.copy2(os.environ["INFERD_BIN"], bins / "inferd"))
        os.environ["BENCH_INFERD_MTIME"] = str(Path(inferd).stat().st_mtime)  # copy2 keeps it
        bare = str(shutil.copy2(os.environ["BARE_AXUM_BIN"], bins / "bare_axum"))
        bare_tonic = str(shutil.copy2(os.environ["BARE_TONIC_BIN"], bins / "bare_tonic"))

        # The request: one digits-like row (pixel intensities 0..16), identical for every server.
        row = [float((i * 7 + 3) % 17) for i in range(64)]
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]}).encode()
        body_path = work / "body.json"
        body_path.write_bytes(body)

        # Model repositories: the same model.onnx for all.
        for name, cfg in (("repo-batching", None), ("repo-nobatch", "max_batch_size = 0\n")):
            d = work / name / MODEL / "1"
            d.mkdir(parents=True)
            shutil.copy2(MODEL_ONNX, d / "model.onnx")
            if cfg:
                (work / name / MODEL / "config.toml").write_text(cfg)
        # Two versions of the same model.onnx, both served, for the experiment's two arms.
        for v in ("1", "2"):
            d = work / "repo-experiment" / MODEL / v
            d.mkdir(parents=True)
            shutil.copy2(MODEL_ONNX, d / "model.onnx")
        (work / "repo-experiment" / MODEL / "config.toml").write_text("[version_policy]\nall = true\n")

        def inferd_server(key: str, label: str, repo: str, auth: list[str] = ["--no-auth"], scheme: str = "http") -> Server:
            hp, gp, mp = free_port(), free_port(), free_port()
            return Server(
                key=key, label=label,
                argv=[inferd, "serve", *auth, "--host", "127.0.0.1", "--model-repository", str(work / repo),
                      "--http-port", str(hp), "--grpc-port", str(gp), "--metrics-port", str(mp),
                      "--data-dir", str(work / f"data-{key}")],
                cwd=work, log_path=out_dir / f"{key}.log",
                infer_url=f"{scheme}://127.0.0.1:{hp}/v2/models/{MODEL}/infer",
                ready_url=f"{scheme}://127.0.0.1:{hp}/v2/models/{MODEL}/ready",
                metrics_url=f"{scheme}://127.0.0.1:{mp}/metrics", grpc_port=gp, http_port=hp,
            )

        servers.append(inferd_server("inferd", "inferd (batching on)", "repo-batching"))
        if not args.skip_auth:
            # The same server with an API key required (SHA-256 compared in constant time,
            # the route's scope checked) on every request.
            keys = work / "keys.json"
            keys.write_text(json.dumps({"keys": [{
                "name": "bench", "sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(), "scopes": ["admin"],
            }]}))
            au = inferd_server("inferd-auth", "inferd (API key)", "repo-batching", ["--api-keys", str(keys)])
            au.api_key = BENCH_KEY
            servers.append(au)
            # A bearer JWT as an OIDC provider issues it (RS256, 2048-bit key, a JWKS file),
            # the same token on every request, as a service sends it for its lifetime.
            jwks, token = bench_jwt(work)
            jw = inferd_server("inferd-jwt", "inferd (JWT, RS256)", "repo-batching", ["--jwks", str(jwks)])
            jw.api_key = token
            servers.append(jw)
            cert, key = bench_certificate(work)
            servers.append(inferd_server("inferd-tls", "inferd (TLS)", "repo-batching",
                                         ["--no-auth", "--tls-cert", str(cert), "--tls-key", str(key)], scheme="https"))
        if not args.skip_access_log:
            # A JSON access-log line per request, written to the server's log file.
            servers.append(inferd_server("inferd-access-log", "inferd (access log)", "repo-batching",
                                         ["--no-auth", "--access-log", "--log-format", "json"]))
        if not args.skip_experiment:
            exp = inferd_server("inferd-experiment", "inferd (experiment, 2 arms)", "repo-experiment")
            base = exp.infer_url.split("/v2/")[0]
            exp.setup_calls = [("PUT", f"{base}/api/experiments/bench", json.dumps({
                "model": MODEL, "arms": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                "guardrails": [{"rule": "error_rate", "max": 0.5}],
            }).encode())]
            servers.append(exp)
            # The same two arms on one version: the router's own cost, without splitting the
            # traffic (and so the batches) over two versions.
            one = inferd_server("inferd-experiment-1v", "inferd (experiment, 2 arms, 1 version)", "repo-batching")
            base = one.infer_url.split("/v2/")[0]
            one.setup_calls = [("PUT", f"{base}/api/experiments/bench", json.dumps({
                "model": MODEL, "arms": [{"name": "a", "version": 1, "weight": 50}, {"name": "b", "version": 1, "weight": 50}],
                "guardrails": [{"rule": "error_rate", "max": 0.5}],
            }).encode())]
            servers.append(one)
        if not args.skip_drift:
            # Every request sampled (the worst case): the reference is captured from the first
            # 1,000 rows, then each 1,000-row window is evaluated (74 columns: 64 inputs, 10
            # outputs and the predicted class) on the monitor's thread, on the same 2 cores.
            dr = inferd_server("inferd-drift", "inferd (drift monitor, every request)", "repo-batching")
            base = dr.infer_url.split("/v2/")[0]
            dr.setup_calls = [("PUT", f"{base}/api/drift/{MODEL}", json.dumps({
                "sample_rate": 1.0, "capture_reference": 1000, "window": {"rows": 1000},
            }).encode())]
            servers.append(dr)
            dr10 = inferd_server("inferd-drift-10", "inferd (drift monitor, 10% of requests)", "repo-batching")
            base = dr10.infer_url.split("/v2/")[0]
            dr10.setup_calls = [("PUT", f"{base}/api/drift/{MODEL}", json.dumps({
                "sample_rate": 0.1, "capture_reference": 1000, "window": {"rows": 1000},
            }).encode())]
            servers.append(dr10)
        servers.append(inferd_server("inferd-nobatch", "inferd (batching off)", "repo-nobatch"))
        bp = free_port()
        servers.append(Server(
            key="bare", label="bare axum", argv=[bare, str(bp)], cwd=work, log_path=out_dir / "bare.log",
            infer_url=f"http://127.0.0.1:{bp}/v2/models/{MODEL}/infer", ready_url=None,
        ))
        if not args.skip_perf_analyzer:
            tp = free_port()
            servers.append(Server(
                key="bare-tonic", label="bare tonic", argv=[bare_tonic, str(tp)], cwd=work,
                log_path=out_dir / "bare-tonic.log", infer_url="", ready_url=None, grpc_port=tp,
                grpc_only=True,
            ))
        if not args.skip_mlserver:
            mdir = work / "mlserver"
            (mdir / MODEL).mkdir(parents=True)
            shutil.copy2(MODEL_ONNX, mdir / MODEL / "model.onnx")
            shutil.copy2(HERE / "mlserver" / "runtime.py", mdir / MODEL / "runtime.py")
            (mdir / MODEL / "model-settings.json").write_text(json.dumps({
                "name": MODEL, "implementation": "runtime.OnnxRuntimeModel",
                "parameters": {"uri": "./model.onnx", "version": "1"},
            }))
            mh, mg, mm = free_port(), free_port(), free_port()
            # parallel_workers 0: MLServer 1.7 with current uvloop only starts that way.
            (mdir / "settings.json").write_text(json.dumps({
                "parallel_workers": 0, "host": "127.0.0.1", "http_port": mh, "grpc_port": mg,
                "metrics_port": mm, "debug": False,
            }))
            servers.append(Server(
                key="mlserver", label="MLServer 1.7 (ORT runtime)", argv=[str(mlserver_bin), "start", "."],
                cwd=mdir, log_path=out_dir / "mlserver.log",
                infer_url=f"http://127.0.0.1:{mh}/v2/models/{MODEL}/infer",
                ready_url=f"http://127.0.0.1:{mh}/v2/models/{MODEL}/ready", start_timeout_s=180,
            ))

        rows: list[Row] = []
        pa_summaries: list[tuple[str, int, str]] = []
        hist_on = hist_off = ""
        outputs: dict[str, list[float]] = {}
        wrk_log = out_dir / "wrk.log"

        tries = int(os.environ.get("BENCH_TRIES", 3))
        quiet_wait = float(os.environ.get("BENCH_QUIET_WAIT", 600))
        quiet = ""

        def measured(what: str, fn):
            """Runs fn (-> (Row, extra)) once the machine is quiet; again, up to `tries` times,
            when other processes took more than OTHER_MAX cores during the measurement."""
            nonlocal quiet
            for attempt in range(1, tries + 1):
                q = wait_quiet(quiet_wait)
                quiet = quiet or q
                log(f"{what}" + (f" (attempt {attempt})" if attempt > 1 else ""))
                row, extra = fn()
                other = row.cpu[2] if row.cpu else 0.0
                if other <= OTHER_MAX:
                    return row, extra
                if attempt == tries:
                    row.note += f"; disturbed: {other:.2f} cores went to other processes"
                    return row, extra
                log(f"  {other:.2f} cores went to other processes during the measurement; measuring again")
            raise AssertionError("unreachable")

        for srv in servers:
            wait_quiet(quiet_wait)
            srv.start(body)
            try:
                if srv.grpc_only:
                    for c in concs:
                        r, summary = measured(
                            f"{srv.label}: perf_analyzer grpc, concurrency {c}",
                            lambda c=c, srv=srv: run_perf_analyzer(
                                "grpc", f"127.0.0.1:{srv.grpc_port}", c, args.duration, out_dir, srv.proc.pid,
                                tag=srv.key),
                        )
                        r.server = srv.label
                        rows.append(r)
                        log(f"  {fmt(r.rps, '.0f')} infer/s, p99 {fmt(r.p99_ms, '.3f')} ms, "
                            f"cores server/client/other {cpu_cell(r.cpu)}")
                    continue
                code, resp = http("POST", srv.infer_url, body, key=srv.api_key)
                if code != 200:
                    raise BenchError(f"{srv.label}: the benchmark request got {code}: {resp[:500]!r}")
                if srv.key != "bare":
                    out = json.loads(resp)["outputs"][0]
                    if out["shape"] != [1, 10]:
                        raise BenchError(f"{srv.label}: output shape {out['shape']}, want [1, 10]")
                    outputs[srv.label] = out["data"]
                for c in concs:
                    def one_wrk(c=c, srv=srv):
                        if args.warmup > 0:
                            run_wrk(srv.infer_url, c, args.warmup, body_path, wrk_log, key=srv.api_key)
                        before = batch_hist(srv.metrics_url) if srv.metrics_url and c == top else None
                        r = run_wrk(srv.infer_url, c, args.duration, body_path, wrk_log, srv.proc.pid, key=srv.api_key)
                        delta = hist_delta(before, batch_hist(srv.metrics_url)) if before is not None else ""
                        return r, delta

                    r, delta = measured(f"{srv.label}: wrk, {c} connections, {args.duration:g} s", one_wrk)
                    r.server = srv.label
                    rows.append(r)
                    log(f"  {r.rps:.0f} req/s, p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms, errors {r.errors}, "
                        f"cores server/loadgen/other {cpu_cell(r.cpu)}")
                    if delta and srv.key == "inferd":
                        hist_on = delta
                    elif delta and srv.key == "inferd-nobatch":
                        hist_off = delta
                if srv.key == "inferd" and not args.skip_perf_analyzer:
                    for proto, port in (("http", srv.http_port), ("grpc", srv.grpc_port)):
                        for c in concs:
                            r, summary = measured(
                                f"{srv.label}: perf_analyzer {proto}, concurrency {c}",
                                lambda proto=proto, port=port, c=c: run_perf_analyzer(
                                    proto, f"127.0.0.1:{port}", c, args.duration, out_dir, srv.proc.pid),
                            )
                            r.server = srv.label
                            rows.append(r)
                            pa_summaries.append((proto, c, summary))
                            log(f"  {fmt(r.rps, '.0f')} infer/s, p99 {fmt(r.p99_ms, '.3f')} ms {r.note}, "
                                f"cores server/client/other {cpu_cell(r.cpu)}")
            finally:
                srv.stop()

        # Same model, same input: inferd and MLServer must agree.
        agree = ""
        vals = list(outputs.values())
        if len(vals) > 1:
            worst = max(abs(a - b) for v in vals[1:] for a, b in zip(vals[0], v))
            agree = f"Outputs of {', '.join(outputs)} for the benchmark request agree to {worst:.1e}."
            if worst > 1e-4:
                raise BenchError(f"servers disagree on the output (max diff {worst}): {outputs}")

        report = render(rows, concs, top, hist_on, hist_off, pa_summaries, agree, args, started, quiet)
        (out_dir / "report.md").write_text(report)
        print(report)
        log(f"report and logs in {out_dir}")
        return 0
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping servers")
        return 130
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def b64url(b: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"openssl {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout


def bench_jwt(work: Path) -> tuple[Path, str]:
    """An RSA-2048 key made by openssl, its JWKS, and a day-long RS256 token with the admin scope."""
    key = work / "jwt-rsa.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    modulus = openssl("rsa", "-in", str(key), "-noout", "-modulus").decode().strip().split("=", 1)[1]
    jwks = work / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                                          "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"}]}))
    now = int(time.time())
    signing_input = ".".join(b64url(json.dumps(x, separators=(",", ":")).encode()) for x in (
        {"alg": "RS256", "typ": "JWT", "kid": "bench"},
        {"sub": "bench", "scope": "admin", "iat": now, "nbf": now - 5, "exp": now + 86400},
    ))
    sig = openssl("dgst", "-sha256", "-sign", str(key), stdin=signing_input.encode())
    return jwks, f"{signing_input}.{b64url(sig)}"


def bench_certificate(work: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1, made by openssl."""
    cert, key = work / "tls.crt", work / "tls.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    return cert, key


def render(rows, concs, top, hist_on, hist_off, pa_summaries, agree, args, started, quiet) -> str:
    def find(server_key: str, tool: str, c: int) -> Row | None:
        return next((r for r in rows if r.server == server_key and r.tool == tool and r.conc == c), None)

    W = "wrk (REST JSON)"
    ON, OFF, BARE, MLS = "inferd (batching on)", "inferd (batching off)", "bare axum", "MLServer 1.7 (ORT runtime)"
    EXP = "inferd (experiment, 2 arms)"
    EXP1 = "inferd (experiment, 2 arms, 1 version)"
    DRIFT = "inferd (drift monitor, every request)"
    DRIFT10 = "inferd (drift monitor, 10% of requests)"
    AUTH = "inferd (API key)"
    JWT = "inferd (JWT, RS256)"
    TLS = "inferd (TLS)"
    ACCESS = "inferd (access log)"
    out = io.StringIO()
    p = lambda s="": print(s, file=out)  # noqa: E731
    p(f"### Load benchmark, {started:%Y-%m-%d %H:%M} UTC")
    p()
    p(f"- machine: {machine()}; load generator and server share it ({quiet})")
    built = dt.datetime.fromtimestamp(float(os.environ["BENCH_INFERD_MTIME"]), dt.timezone.utc)
    p(f"- inferd commit: {git_rev()}, release binary built {built:%Y-%m-%d %H:%M} UTC; wrk threads: min(connections, {os.environ.get('BENCH_WRK_THREADS', '2')}); "
      f"each measurement {args.duration:g} s after a {args.warmup:g} s warmup, one server running at a time")
    p(f"- request: POST /v2/models/{MODEL}/infer, V2 JSON, one row of 64 FP32 (`{MODEL}`: 64 → 10, digits-sized MLP)")
    if agree:
        p(f"- {agree}")
    p()
    p("| server | load | conns | req/s | p50 ms | p99 ms | server CPU µs/req | CPU cores: server / load gen / other | notes |")
    p("|---|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        per_req = r.cpu[0] / r.rps * 1e6 if r.cpu and r.rps else None
        p(f"| {r.server} | {r.tool} | {r.conc} | {fmt(r.rps, ',.0f')} | {fmt(r.p50_ms, '.3f')} | {fmt(r.p99_ms, '.3f')} | "
          f"{fmt(per_req, '.1f')} | {cpu_cell(r.cpu)} | {r.note} |")
    p()
    p("Ratios of request rates (wrk, REST JSON):")
    p()
    p("| conns | inferd / bare axum | inferd / MLServer | batching on / off | inferd off / bare axum | experiment (2 versions) / none | experiment (1 version) / none | drift, every request / none | drift, 10% / none | API key / none | JWT / none | TLS / none | access log / none |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in concs:
        on, off, bare, mls, exp, exp1, dr, dr10, au, jw, tl, al = (find(s, W, c) for s in (ON, OFF, BARE, MLS, EXP, EXP1, DRIFT, DRIFT10, AUTH, JWT, TLS, ACCESS))
        p(f"| {c} | {fmt(ratio(on, bare), '.2f')} | {fmt(ratio(on, mls), '.1f', '×')} | {fmt(ratio(on, off), '.2f')} | "
          f"{fmt(ratio(off, bare), '.2f')} | {fmt(ratio(exp, on), '.2f')} | {fmt(ratio(exp1, on), '.2f')} | {fmt(ratio(dr, on), '.2f')} | "
          f"{fmt(ratio(dr10, on), '.2f')} | {fmt(ratio(au, on), '.2f')} | {fmt(ratio(jw, on), '.2f')} | {fmt(ratio(tl, on), '.2f')} | "
          f"{fmt(ratio(al, on), '.2f')} |")
    p()
    on, bare, mls = find(ON, W, top), find(BARE, W, top), find(MLS, W, top)
    r_bare, r_mls = ratio(on, bare), ratio(on, mls)
    verdict = lambda ok: "n/a" if ok is None else ("**met**" if ok else "**not met**")  # noqa: E731
    p(f"Targets at {top} connections (inferd, batching on):")
    p()
    p(f"- ≥ 50% of bare axum's request rate: {fmt(r_bare and 100 * r_bare, '.0f')}% → {verdict(None if r_bare is None else r_bare >= 0.5)}")
    p(f"- ≥ 20× MLServer's request rate: {fmt(r_mls, '.1f')}× → {verdict(None if r_mls is None else r_mls >= 20)}")
    p(f"- p99 < 2 ms: {fmt(on and on.p99_ms, '.3f')} ms → {verdict(None if on is None or on.p99_ms is None else on.p99_ms < 2)}")
    for label, key in (("two arms on one version (the router's own cost)", EXP1), ("two arms on two versions (the batches split too)", EXP)):
        r_exp = ratio(find(key, W, top), on)
        p(f"- with an experiment of {label}, ≥ 95% of the rate without: {fmt(r_exp and 100 * r_exp, '.0f')}% → {verdict(None if r_exp is None else r_exp >= 0.95)}")
    for label, key in (("an API key", AUTH), ("a JWT (RS256)", JWT), ("TLS", TLS)):
        r_au = ratio(find(key, W, top), on)
        p(f"- with {label} on every request, ≥ 95% of the rate without: {fmt(r_au and 100 * r_au, '.0f')}% → {verdict(None if r_au is None else r_au >= 0.95)}")
    for label, key in (("every request", DRIFT), ("10% of requests", DRIFT10)):
        r_dr = ratio(find(key, W, top), on)
        p(f"- with a drift monitor sampling {label}, ≥ 97% of the rate without: {fmt(r_dr and 100 * r_dr, '.0f')}% → {verdict(None if r_dr is None else r_dr >= 0.97)}")
    if hist_on:
        p()
        p(f"`inferd_inference_batch_size` (model `{MODEL}`) during the {top}-connection wrk run, batching on: {hist_on}")
    if hist_off:
        p()
        p(f"Batching off, same run: {hist_off}")
    pa = [r for r in rows if r.tool.startswith("perf_analyzer")]
    if pa:
        p()
        p("perf_analyzer against inferd (batching on) and bare tonic, server-side breakdown from /v2/models/mlp/stats (averages per request):")
        p()
        p("| server | load | conc | infer/s | p50 ms | p99 ms | server CPU µs/req | server side | notes |")
        p("|---|---|---:|---:|---:|---:|---:|---|---|")
        for r in pa:
            per_req = r.cpu[0] / r.rps * 1e6 if r.cpu and r.rps else None
            p(f"| {r.server} | {r.tool} | {r.conc} | {fmt(r.rps, ',.0f')} | {fmt(r.p50_ms, '.3f')} | {fmt(r.p99_ms, '.3f')} | "
              f"{fmt(per_req, '.1f')} | {r.server_side} | {r.note} |")
        G = "perf_analyzer (gRPC)"
        if any(r.server == "bare tonic" for r in pa):
            p()
            p("gRPC, inferd / bare tonic (perf_analyzer): " + ", ".join(
                f"{c} → {fmt(ratio(find(ON, G, c), find('bare tonic', G, c)), '.2f')}" for c in concs))
        p()
        p("<details><summary>perf_analyzer output</summary>")
        p()
        for proto, c, s in pa_summaries:
            p(f"```\n# -i {proto}, concurrency {c}\n{s}\n```")
        p()
        p("</details>")
    return out.getvalue()


if __name__ == "__main__":
    sys.exit(main())
