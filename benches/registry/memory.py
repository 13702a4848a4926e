#!/usr/bin/env python3
"""Resident memory across registry upload/swap cycles.

Starts inferd on an empty repository, then 20 times: uploads a new version of a 64 MiB MLP
(alternating two weight sets), moves `production` to it (the previous version is unloaded
once no alias points at it), and runs a few inferences. Prints the server's RSS after each
cycle and the ratio of the last to the first. Run with `. scripts/env.sh` first:

    python benches/registry/memory.py [--cycles 20]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import onnx
from onnx import TensorProto as TP, helper, numpy_helper


def big_mlp(seed, width=4096):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((width, width)) * 0.01).astype(np.float32)  # 64 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big_mlp",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/inferd/target")), "release/inferd"))
    args = ap.parse_args()
    artifacts = [big_mlp(1), big_mlp(2)]
    with tempfile.TemporaryDirectory() as repo:
        http, grpc, metrics = free_port(), free_port(), free_port()
        srv = subprocess.Popen(
            [args.bin, "serve", "--no-auth", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(http),
             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--data-dir", repo + "/.data"],
            stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{http}"
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/v2/health/ready", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            x = json.dumps({"inputs": [{"name": "x", "shape": [1, 4096], "datatype": "FP32", "data": [0.5] * 4096}]}).encode()
            samples = []
            for cycle in range(1, args.cycles + 1):
                v = call("POST", f"{base}/api/models/big/versions?wait=true", artifacts[cycle % 2],
                         {"content-type": "application/octet-stream"})
                assert v["status"] == "READY", v
                call("PUT", f"{base}/api/models/big/aliases/production", json.dumps({"version": v["version"]}).encode(),
                     {"content-type": "application/json"})
                for _ in range(5):
                    out = call("POST", f"{base}/v2/models/big/infer", x, {"content-type": "application/json"})
                    assert out["model_version"] == str(v["version"]), out["model_version"]
                time.sleep(0.2)  # let the unloaded version's worker threads exit
                loaded = [e for e in call("POST", f"{base}/v2/repository/index", b"{}") if e["state"] == "READY"]
                samples.append(rss_mib(srv.pid))
                print(f"cycle {cycle:2d}: version {v['version']:2d}, {len(loaded)} versions loaded, RSS {samples[-1]:7.1f} MiB", flush=True)
            ratio = samples[-1] / samples[0]
            print(f"\nRSS after cycle 1: {samples[0]:.1f} MiB; after cycle {args.cycles}: {samples[-1]:.1f} MiB; "
                  f"ratio {ratio:.3f} (target <= 1.10); max {max(samples):.1f} MiB")
            return 0 if ratio <= 1.10 else 1
        finally:
            srv.terminate()
            srv.wait()


if __name__ == "__main__":
    sys.exit(main())
