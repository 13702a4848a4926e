#!/usr/bin/env bash
# The fleet benchmark (benches/fleet/fleet.py): three replicas on one S3-compatible registry
# against one replica, same wrk load, plus alias convergence. Needs the test setup
# (scripts/setup.sh test: moto, wrk) and a release build of inferd.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../../scripts/env.sh
. "$root/scripts/env.sh" >/dev/null
[[ -n "${BENCH_NO_BUILD:-}" ]] || (cd "$root" && cargo build --release --bin inferd)
exec "$INFERD_VENV/bin/python" "$here/fleet.py" "$@"
