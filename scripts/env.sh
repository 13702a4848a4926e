# Source this file (`. scripts/env.sh`) to get inferd's development environment: it runs
# scripts/setup.sh (a no-op when everything is installed) and exports ORT_DYLIB_PATH,
# CARGO_TARGET_DIR, INFERD_VENV and INFERD_CACHE. `inferd_setup=serve` before it installs
# only what serving needs (the run command); the default is everything the tests need.
eval "$("$(dirname "${BASH_SOURCE[0]}")/setup.sh" "${inferd_setup:-test}")"
