#!/usr/bin/env bash
# REST load benchmark of inferd's serving core against a bare axum server and Seldon MLServer,
# on the digits-sized MLP fixture. One command, from anywhere:
#
#   benches/load/run.sh [--duration S] [--warmup S] [--concurrency 1,8,32] [--skip-mlserver]
#                       [--skip-perf-analyzer] [--skip-experiment] [--skip-drift] [--skip-auth]
#                       [--out-dir DIR]
#
# Installs what it needs (scripts/setup.sh: inferd's venv with perf_analyzer, wrk; MLServer in
# its own venv, ~/.cache/inferd/mlserver-venv), builds the release binaries (skip with
# BENCH_NO_BUILD=1 to use what is already in $CARGO_TARGET_DIR/release), then runs
# benches/load/bench.py, which starts and stops every server itself and prints a markdown report
# (also written with the raw logs under ~/.cache/inferd/bench/load-<timestamp>/).
# Takes 10-12 minutes with the defaults on an idle machine; nothing but loopback traffic.
# The load generator shares the machine with the server, so each measurement records the cores
# taken by the server, the load generator and anything else; it waits for the machine to be
# quiet first, and measures again (up to BENCH_TRIES=3 times) when other processes took more
# than BENCH_OTHER_MAX=0.2 cores. Other knobs: BENCH_DURATION, BENCH_WARMUP, BENCH_CONCURRENCY,
# BENCH_WRK_THREADS (2), BENCH_PA_STABILITY (25, perf_analyzer's %), BENCH_QUIET_WAIT (600 s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
. scripts/env.sh

if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  echo "run.sh: cargo build --release --bins --examples" >&2
  cargo build --release --bins --examples >&2
fi
export INFERD_BIN="$CARGO_TARGET_DIR/release/inferd"
export BARE_AXUM_BIN="$CARGO_TARGET_DIR/release/examples/bare_axum"
export BARE_TONIC_BIN="$CARGO_TARGET_DIR/release/examples/bare_tonic"
for b in "$INFERD_BIN" "$BARE_AXUM_BIN" "$BARE_TONIC_BIN"; do
  [[ -x "$b" ]] || { echo "run.sh: $b missing; run cargo build --release --bins --examples" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "run.sh: wrk not found and scripts/setup.sh could not install it (apt-get install wrk)" >&2; exit 1; }

# MLServer in its own venv (its dependencies clash with inferd's); reinstalled only when
# benches/load/requirements-mlserver.txt changes.
skip_mlserver=0
for a in "$@"; do [[ "$a" == --skip-mlserver ]] && skip_mlserver=1; done
export MLSERVER_VENV="$INFERD_CACHE/mlserver-venv"
if [[ "$skip_mlserver" == 0 ]]; then
  req="$root/benches/load/requirements-mlserver.txt"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ ! -x "$MLSERVER_VENV/bin/mlserver" || "$(cat "$MLSERVER_VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    echo "run.sh: installing MLServer into $MLSERVER_VENV" >&2
    python3 -m venv "$MLSERVER_VENV"
    "$MLSERVER_VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
    "$MLSERVER_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    echo "$want" >"$MLSERVER_VENV/.requirements.sha256"
  fi
fi

exec "$INFERD_VENV/bin/python" "$root/benches/load/bench.py" "$@"
