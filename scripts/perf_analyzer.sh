#!/usr/bin/env bash
# Runs Triton's perf_analyzer (shipped in the tritonclient wheel of inferd's venv) with the
# given arguments, e.g.
#   scripts/perf_analyzer.sh -m mlp -u localhost:8000 -i http --concurrency-range 1:32:4 \
#     --measurement-interval 2000
#   scripts/perf_analyzer.sh -m mlp -u localhost:8001 -i grpc --concurrency-range 1:32:4
# perf_analyzer links libcudart.so.12 even without a GPU; it comes from the
# nvidia-cuda-runtime-cu12 wheel (scripts/requirements-bench.txt), put on LD_LIBRARY_PATH here.
# Runs scripts/setup.sh first (a no-op when everything is installed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$here/setup.sh")"
pa="$INFERD_VENV/bin/perf_analyzer"
[[ -x "$pa" ]] || { echo "perf_analyzer.sh: $pa not found (tritonclient wheel)" >&2; exit 1; }
cudart="$(ls -d "$INFERD_VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib 2>/dev/null | head -n1)"
[[ -n "$cudart" ]] || { echo "perf_analyzer.sh: libcudart.so.12 not found in $INFERD_VENV (nvidia-cuda-runtime-cu12)" >&2; exit 1; }
export LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$pa" "$@"
