#!/usr/bin/env bash
# The run command: installs the ONNX Runtime library (cached under ~/.cache/inferd), builds
# inferd, and serves. With no arguments it serves the example models embedded in the binary
# on :8000 (REST), :8001 (gRPC) and :8002 (/metrics); any arguments go to `inferd serve`,
# e.g. `scripts/run.sh --model-repository /srv/models`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
cargo build --release --bin inferd
exec "$CARGO_TARGET_DIR/release/inferd" serve "$@"
