#!/usr/bin/env bash
# Vector search benchmark: inferd's HNSW index against hnswlib and faiss on the same vectors,
# with the same metric, m / ef_construction and ef sweep, for two sets: 100,000 × 128 clustered
# synthetic vectors (L2) and all-MiniLM-L6-v2 embeddings of the machine's Debian package
# descriptions (384-d, cosine; skipped where there are no package lists). Prints one markdown
# table per set (recall@10 and single-thread QPS per ef, build time).
#
#   benches/vector/run.sh                  # both sets
#   BENCH_SETS=synthetic benches/vector/run.sh
#   # BENCH_N, BENCH_Q, BENCH_M, BENCH_EFC change the set-up
#
# hnswlib and faiss-cpu come from the Python registry into their own venv (~/.cache/inferd/bench-venv), so the
# project's test venv stays as it is. About 5 minutes per set on 2 cores, plus ~5 minutes the
# first time to embed the Debian descriptions (cached after).
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
dir="${BENCH_VECTOR_DIR:-$INFERD_CACHE/bench/vector}"
for set in ${BENCH_SETS:-synthetic debian}; do
  BENCH_SET="$set" BENCH_VECTOR_DIR="$dir" cargo bench --bench vector_ann >&2
  if [[ -f "$dir/$set/inferd.json" ]]; then
    "$venv/bin/python" benches/vector/peers.py "$dir/$set"
    echo
  fi
done
