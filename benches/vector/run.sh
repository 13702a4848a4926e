#!/usr/bin/env bash
# Vector search benchmark: inferd's HNSW index (hnsw_rs) against hnswlib and faiss on the same
# 100,000 × 128 clustered vectors, with the same m / ef_construction and ef sweep. Prints one
# markdown table (recall@10 and single-thread QPS per ef, build time).
#
#   benches/vector/run.sh            # BENCH_N, BENCH_Q, BENCH_M, BENCH_EFC to change the set-up
#
# hnswlib and faiss-cpu come from PyPI into their own venv (~/.cache/inferd/bench-venv), so the
# project's test venv stays as it is. Takes about 5 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
. scripts/env.sh
venv="$INFERD_CACHE/bench-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import hnswlib, faiss, numpy' 2>/dev/null; then
  echo "run.sh: installing hnswlib, faiss-cpu and numpy into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.2.6 hnswlib==0.8.0 faiss-cpu==1.15.1 >&2
fi
cargo bench --bench vector_ann >&2
"$venv/bin/python" benches/vector/peers.py
