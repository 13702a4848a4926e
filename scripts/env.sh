# Source this file (`. scripts/env.sh`) to get inferd's development environment: it runs
# scripts/setup.sh (a no-op when everything is installed) and exports ORT_DYLIB_PATH,
# CARGO_TARGET_DIR, INFERD_VENV and INFERD_CACHE.
eval "$("$(dirname "${BASH_SOURCE[0]}")/setup.sh")"
