"""The fleet's numbers on one machine: three inferd replicas sharing a registry in
S3-compatible storage (moto's server, tests/python/s3_server.py) against one replica alone,
the same wrk load (REST JSON, digits MLP) in one run; and the time an alias moved through one
replica takes to serve on all three.

    benches/fleet/run.sh [--duration S] [--connections N] [--moves N]

The three replicas share the machine's cores with each other and with wrk, so the aggregate
rate is bounded by the cores, not by the replicas: this records what a fleet costs on one
machine, not how it scales across machines.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models"
CACHE = Path(os.environ.get("INFERD_CACHE") or Path.home() / ".cache" / "inferd")
BINARY = Path(os.environ.get("INFERD_BIN") or Path(os.environ.get("CARGO_TARGET_DIR") or CACHE / "target") / "release" / "inferd")
BUCKET = "inferd-bench"
ROWS = np.random.default_rng(7).random((1, 64), dtype=np.float32)
# wrk's load threads in both rows.
WRK_THREADS = 3
BODY = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_http(url, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    sys.exit(f"fleet.py: {url} not ready within {deadline_s} s")


def ort_env():
    env = dict(os.environ)
    if not env.get("ORT_DYLIB_PATH"):
        import onnxruntime

        libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
        env["ORT_DYLIB_PATH"] = str(libs[0])
    return env


def start_s3(work):
    import boto3

    (port,) = free_ports(1)
    log = open(work / "s3.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "python" / "s3_server.py"), str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("fleet.py: the S3 server did not start")
            time.sleep(0.1)
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, endpoint


def start_replica(work, tag, endpoint, poll_ms):
    http, grpc, metrics = free_ports(3)
    log = open(work / f"{tag}.log", "wb")
    cmd = [str(BINARY), "serve", "--no-auth", "--data-dir", str(work / f"{tag}-data"),
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
           "--registry", f"s3://{BUCKET}/models", "--registry-poll-ms", str(poll_ms),
           "--registry-option", f"endpoint={endpoint}", "--registry-option", "allow_http=true",
           "--registry-option", "access_key_id=test", "--registry-option", "secret_access_key=test",
           "--registry-option", "region=us-east-1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ort_env())
    url = f"http://127.0.0.1:{http}"
    wait_http(url + "/v2/health/ready")
    return proc, url


def wrk(urls, connections, seconds, body_path):
    """One wrk per URL at once, the connections and WRK_THREADS load threads split between
    them (the same load-generator CPU either way); the summed rate."""
    n = len(urls)
    conns = [connections // n + (i < connections % n) for i in range(n)]
    threads = [max(1, WRK_THREADS // n)] * n
    procs = [subprocess.Popen(
        ["wrk", "-t", str(t), "-c", str(c), "-d", f"{int(seconds)}s", "--latency",
         "-s", str(ROOT / "benches" / "load" / "post.lua"), f"{u}/v2/models/digits/infer"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "BENCH_BODY": str(body_path)}) for u, c, t in zip(urls, conns, threads)]
    rate, errors, p50 = 0.0, 0, []
    for p in procs:
        out, _ = p.communicate()
        m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) status_errors=(\d+).*?p50_us=(\d+)", out)
        if not m:
            sys.exit(f"fleet.py: wrk printed no RESULT:\n{out}")
        n, dur, errs, median = (int(x) for x in m.groups())
        rate += n / (dur / 1e6)
        errors += errs
        p50.append(median)
    return rate, errors, p50


def upload(url, artifact):
    r = requests.post(f"{url}/api/models/digits/versions", params={"wait": "true"},
                      data=Path(artifact).read_bytes(), timeout=60)
    r.raise_for_status()
    return r.json()["version"]


def served_version(session, url):
    r = session.post(f"{url}/v2/models/digits/infer", json=BODY, timeout=10)
    return r.json()["model_version"] if r.status_code == 200 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--poll-ms", type=int, default=1000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inferd-fleet-bench-"))
    body_path = work / "body.json"
    body_path.write_text(json.dumps(BODY))
    procs = []
    try:
        s3, endpoint = start_s3(work)
        procs.append(s3)
        replicas = []
        for i in (1, 2, 3):
            p, u = start_replica(work, f"replica{i}", endpoint, args.poll_ms)
            procs.append(p)
            replicas.append(u)
        upload(replicas[0], FIXTURES / "mlp" / "1" / "model.onnx")
        upload(replicas[0], FIXTURES / "mlp_v2" / "1" / "model.onnx")
        requests.put(f"{replicas[0]}/api/models/digits/aliases/production", json={"version": 1}, timeout=60).raise_for_status()
        session = requests.Session()
        deadline = time.monotonic() + 60
        while not all(served_version(session, u) == "1" for u in replicas):
            if time.monotonic() > deadline:
                sys.exit("fleet.py: the replicas never all served version 1")
            time.sleep(0.05)

        one, one_err, one_p50 = wrk(replicas[:1], args.connections, args.duration, body_path)
        three, three_err, three_p50 = wrk(replicas, args.connections, args.duration, body_path)

        # Alias convergence: move production through a different replica each time and time
        # until every replica answers with the new version.
        times = []
        for k in range(args.moves):
            target = 2 if k % 2 == 0 else 1
            via = replicas[k % 3]
            t0 = time.monotonic()
            requests.put(f"{via}/api/models/digits/aliases/production", json={"version": target}, timeout=60).raise_for_status()
            moved = time.monotonic()
            while not all(served_version(session, u) == str(target) for u in replicas):
                if time.monotonic() - t0 > 60:
                    sys.exit("fleet.py: an alias move did not converge within 60 s")
                time.sleep(0.005)
            times.append((time.monotonic() - moved) * 1000)

        print(f"| setup | connections | req/s | errors | p50 µs per wrk |")
        print(f"|---|---|---|---|---|")
        print(f"| one replica | {args.connections} | {one:,.0f} | {one_err} | {one_p50[0]} |")
        print(f"| three replicas (aggregate) | {args.connections} | {three:,.0f} | {three_err} | {' / '.join(map(str, three_p50))} |")
        print(f"\nthree / one: {three / one:.2f}")
        print(f"alias convergence over 3 replicas, poll {args.poll_ms} ms, {args.moves} moves: "
              f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms, min {min(times):.0f} ms")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
