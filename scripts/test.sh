#!/usr/bin/env bash
# The test command: installs what the tests need (cached under ~/.cache/inferd), then runs
# every test — Rust unit and end-to-end tests (cargo test), and Triton's Python client
# against the real server (pytest). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test" >&2
cargo test --release --workspace --all-targets
echo "==> pytest (tritonclient against inferd)" >&2
export INFERD_BIN="$CARGO_TARGET_DIR/release/inferd"
"$INFERD_VENV/bin/python" -m pytest -q tests/python
