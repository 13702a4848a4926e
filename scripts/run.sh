#!/usr/bin/env bash
# The run command: installs what serving needs (cached under ~/.cache/inferd), builds
# inferd, and serves. With no arguments it serves the example models embedded in the binary
# on 127.0.0.1:8000 (REST), :8001 (gRPC) and :8002 (/metrics), without authentication; any
# arguments go to `inferd serve`,
# e.g. `scripts/run.sh --model-repository /srv/models`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# What serving needs only (ONNX Runtime's wheel, OpenSSL's headers for the build, the quick
# start's sentence encoder): no test clients, benchmark tools or Kafka broker.
inferd_setup=serve
. scripts/env.sh
cargo build --release --bin inferd
# Without keys it serves unauthenticated, on 127.0.0.1 only (`--no-auth`); give
# `--api-keys FILE` (or INFERD_API_KEYS) to require keys and listen on every interface.
auth=(--no-auth)
for a in "$@"; do [[ "$a" == --api-keys* || "$a" == --no-auth ]] && auth=(); done
[[ -n "${INFERD_API_KEYS:-}" || -n "${INFERD_NO_AUTH:-}" ]] && auth=()
exec "$CARGO_TARGET_DIR/release/inferd" serve "${auth[@]}" "$@"
