#!/usr/bin/env bash
# Online feature reads over HTTP against the running server: POST /api/features/get-online-features
# at 1 and 100 entities per request, with the memory store and with Redis. One command:
#
#   benches/features/run.sh            # DURATION=10 seconds per measurement, WARMUP=2
#
# Builds the release binary, then per store: starts redis-server (Redis only; no persistence)
# and `inferd serve` on free ports of 127.0.0.1, defines a view `user` keyed by user_id with 8
# float32 features, pushes 10 000 entities (POST /api/features/push), and drives the read
# endpoint with wrk: one connection, closed loop (a request is sent when the last answered),
# random entities per request (benches/features/read.lua). Prints wrk's p50 / p99 and req/s.
# The load generator shares the machine's cores with the server and Redis.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
. scripts/env.sh
command -v wrk >/dev/null || { echo "run.sh: wrk not found (scripts/setup.sh installs it)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "run.sh: redis-server not found (scripts/setup.sh installs it)" >&2; exit 1; }
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release --bin inferd >&2
bin="$CARGO_TARGET_DIR/release/inferd"
duration="${DURATION:-10}"
warmup="${WARMUP:-2}"
entities=10000

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cat >"$work/views.toml" <<'EOF'
[views.user]
entities = ["user_id"]
ttl = "1d"
features = [
  { name = "f0", type = "float32" }, { name = "f1", type = "float32" },
  { name = "f2", type = "float32" }, { name = "f3", type = "float32" },
  { name = "f4", type = "float32" }, { name = "f5", type = "float32" },
  { name = "f6", type = "float32" }, { name = "f7", type = "float32" },
]
EOF
mkdir -p "$work/models"

echo "| store | entities / request | p50 | p99 | req/s |"
echo "|---|---|---|---|---|"
for store in memory redis; do
  url=memory
  if [[ "$store" == redis ]]; then
    rport="$(free_port)"
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize no --logfile "$work/redis.log" >/dev/null &
    pids+=($!)
    url="redis://127.0.0.1:$rport/"
    for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  http="$(free_port)"; grpc="$(free_port)"; metrics="$(free_port)"
  INFERD_LOG=warn "$bin" serve --no-auth --model-repository "$work/models" --data-dir "$work/data-$store" \
    --host 127.0.0.1 --http-port "$http" --grpc-port "$grpc" --metrics-port "$metrics" \
    --feature-store "$url" --feature-views "$work/views.toml" 2>"$work/inferd-$store.log" &
  pids+=($!)
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$http/v2/health/ready" >/dev/null && break
    sleep 0.1
  done
  # 10 000 entities, 1 000 per push.
  python3 - "$http" "$entities" <<'EOF'
import json, random, sys, time, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
now = int(time.time() * 1000)
for start in range(0, n, 1000):
    rows = [
        {"user_id": f"u{i}", "event_timestamp": now, **{f"f{k}": random.random() for k in range(8)}}
        for i in range(start, min(n, start + 1000))
    ]
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/features/push",
        data=json.dumps({"feature_view": "user", "rows": rows}).encode(),
        headers={"Content-Type": "application/json"},
    )
    out = json.load(urllib.request.urlopen(req))
    assert out["written"] == len(rows), out
EOF
  for k in 1 100; do
    ENTITIES=$k ENTITY_COUNT=$entities wrk -t1 -c1 -d"${warmup}s" -s benches/features/read.lua \
      "http://127.0.0.1:$http" >/dev/null
    out="$(ENTITIES=$k ENTITY_COUNT=$entities wrk -t1 -c1 -d"${duration}s" --latency \
      -s benches/features/read.lua "http://127.0.0.1:$http")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    echo "| $store | $k | $p50 | $p99 | $rps |"
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
done
