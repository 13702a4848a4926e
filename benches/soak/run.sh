#!/usr/bin/env bash
# The soak and overload run: starts inferd (the load benchmark's MLP, loopback, --no-auth),
# measures its capacity, holds 80% of it for SOAK_SECS (default 120) and then twice it for
# OVERLOAD_SECS (default 30) — benches/soak/soak.rs — and prints a markdown report (also
# under ~/.cache/inferd/bench/soak-<timestamp>/ with the server's log). Bounded: about
# SOAK_SECS + OVERLOAD_SECS + 20 s. Exits non-zero when a property fails (a non-200 in the
# soak, memory growth past 10%, anything but 200/429 in the overload).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
. scripts/env.sh
if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  cargo build --release --bin inferd --example soak >&2
fi
out="$INFERD_CACHE/bench/soak-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/repo/mlp/1"
cp tests/fixtures/models/mlp/1/model.onnx "$work/repo/mlp/1/"
python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [float((i * 7 + 3) % 17) for i in range(64)]}]}))' > "$work/body.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CARGO_TARGET_DIR/release/inferd" serve --no-auth --host 127.0.0.1 --model-repository "$work/repo" \
  --http-port "$port" --grpc-port 0 --metrics-port 0 --data-dir "$work/data" 2> "$out/server.log" &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
  sleep 0.1
done
"$CARGO_TARGET_DIR/release/examples/soak" --url "http://127.0.0.1:$port/v2/models/mlp/infer" \
  --body "$work/body.json" --pid "$pid" \
  --soak-secs "${SOAK_SECS:-120}" --overload-secs "${OVERLOAD_SECS:-30}" "$@" | tee "$out/report.md"
