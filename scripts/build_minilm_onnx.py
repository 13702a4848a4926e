#!/usr/bin/env python3
"""Builds the BERT encoder of all-MiniLM-L6-v2 as an ONNX graph, straight from model.safetensors.

    ~/.cache/inferd/venv/bin/python scripts/build_minilm_onnx.py [--force] [MODEL_DIR]

MODEL_DIR defaults to ${INFERD_CACHE:-~/.cache/inferd}/models/all-MiniLM-L6-v2/1 (what
scripts/fetch_minilm.sh lays out, and which runs this script at its end). Writes MODEL_DIR/model.onnx
next to model.safetensors. No torch, no exporter: the graph is written node by node with
onnx.helper, following the NumPy reference forward pass in tests/fixtures/gen_embeddings.py.

Graph contract:
  inputs   input_ids       INT64 [batch, seq]
           attention_mask  INT64 [batch, seq]   1 = real token, 0 = padding
  output   last_hidden_state FP32 [batch, seq, 384]
  opset 17 (default domain), ir_version 8; all weights float32 initializers.
  Embeddings: word[input_ids] + position[0..seq-1] + token_type[0] (token types are all zero),
  LayerNorm (eps 1e-12). Then 6 x [12-head self-attention (scale 1/sqrt(32), additive key mask
  (1 - attention_mask) * float32 min, softmax over keys), residual + LayerNorm, exact erf GELU
  MLP (384 -> 1536 -> 384), residual + LayerNorm]. No pooler: mean pooling and L2 normalisation
  are the caller's.

Idempotent: does nothing (and prints nothing) when model.onnx exists and the stamp file
MODEL_DIR/.model.onnx.built names this script's version and the sha256 of the current
model.safetensors. Otherwise builds to a temp file beside the destination, validates it with
onnxruntime (CPU, one thread) against tests/fixtures/embeddings.json (every case alone, cosine >=
0.99999 after mean pooling + L2 normalisation; and a padded, masked batch of 8 mixed-length cases,
which must pool to the unpadded embeddings within 1e-5), then renames it into place and writes the
stamp last. All output goes to stderr.
"""

import hashlib
import os
import sys
import time
from pathlib import Path

SCRIPT_VERSION = "1"
HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "tests" / "fixtures" / "embeddings.json"
DEFAULT_MODEL_DIR = (
    Path(os.environ.get("INFERD_CACHE", Path.home() / ".cache" / "inferd"))
    / "models"
    / "all-MiniLM-L6-v2"
    / "1"
)
ONNX_NAME = "model.onnx"
STAMP_NAME = ".model.onnx.built"

OPSET = 17
IR_VERSION = 8
NEG = -3.4028234663852886e38  # float32 min, as HF / candle use for masked keys
COSINE_MIN = 0.99999
BATCH_TOL = 1e-5


def log(msg):
    print(f"build_minilm_onnx: {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Graph


def build_model(model_dir):
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu", cfg
    assert cfg.get("position_embedding_type", "absolute") == "absolute", cfg
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    n_layers = cfg["num_hidden_layers"]
    inter_size = cfg["intermediate_size"]
    eps = float(cfg["layer_norm_eps"])
    dh = H // nh
    assert (H, nh, dh, n_layers, inter_size, eps) == (384, 12, 32, 6, 1536, 1e-12), cfg

    raw = load_file(str(model_dir / "model.safetensors"))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
    w = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}

    nodes, inits = [], []
    used = set()

    def init(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(arr, dtype=dtype)), name))
        return name

    def weight(key):
        assert key in w, key
        used.add(key)
        return w[key]

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def dense(x, key, out):
        # safetensors stores Linear weights as [out, in]; MatMul wants [in, out].
        wt = init(key + ".weight_t", weight(key + ".weight").T)
        b = init(key + ".bias", weight(key + ".bias"))
        return node("Add", [node("MatMul", [x, wt], out + "/matmul"), b], out)

    def layer_norm(x, key, out):
        g = init(key + ".weight", weight(key + ".weight"))
        b = init(key + ".bias", weight(key + ".bias"))
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=eps)

    # Shared constants.
    c_one = init("const/one", 1.0)
    c_neg = init("const/neg_big", NEG)
    c_scale = init("const/attn_scale", 1.0 / np.sqrt(dh))
    c_half = init("const/half", 0.5)
    c_sqrt2 = init("const/sqrt2", np.sqrt(2.0))
    c_zero1 = init("const/zero_1d", [0], np.int64)
    c_axes12 = init("const/axes_1_2", [1, 2], np.int64)
    c_heads_shape = init("const/heads_shape", [0, 0, nh, dh], np.int64)
    c_hidden_shape = init("const/hidden_shape", [0, 0, H], np.int64)

    # Embeddings.
    word = init("embeddings.word_embeddings.weight", weight("embeddings.word_embeddings.weight"))
    pos = init("embeddings.position_embeddings.weight", weight("embeddings.position_embeddings.weight"))
    tt = init("embeddings.token_type_embeddings.row0", weight("embeddings.token_type_embeddings.weight")[0])
    x = node("Gather", [word, "input_ids"], "emb/word", axis=0)  # [B, T, H]
    seq_len = node("Shape", ["input_ids"], "emb/seq_len", start=1, end=2)  # [1] = [T]
    pos_t = node("Slice", [pos, c_zero1, seq_len, c_zero1], "emb/pos")  # [T, H]
    x = node("Add", [x, pos_t], "emb/add_pos")
    x = node("Add", [x, tt], "emb/add_type")
    x = layer_norm(x, "embeddings.LayerNorm", "emb/ln")

    # Additive key mask, [B, 1, 1, T]: 0 for real tokens, float32 min for padding.
    m = node("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)
    m = node("Sub", [c_one, m], "mask/inv")
    m = node("Mul", [m, c_neg], "mask/bias")
    mask_bias = node("Unsqueeze", [m, c_axes12], "mask/bias_4d")

    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        n = f"l{i}/"
        # Self-attention.
        q = dense(x, p + "attention.self.query", n + "q")
        k = dense(x, p + "attention.self.key", n + "k")
        v = dense(x, p + "attention.self.value", n + "v")
        q = node("Transpose", [node("Reshape", [q, c_heads_shape], n + "q/heads")], n + "q/bhtd", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, c_heads_shape], n + "k/heads")], n + "k/bhdt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, c_heads_shape], n + "v/heads")], n + "v/bhtd", perm=[0, 2, 1, 3])
        s = node("MatMul", [q, k], n + "scores/raw")  # [B, nh, T, T]
        s = node("Mul", [s, c_scale], n + "scores/scaled")
        s = node("Add", [s, mask_bias], n + "scores/masked")
        a = node("Softmax", [s], n + "probs", axis=-1)
        ctx = node("MatMul", [a, v], n + "ctx/bhtd")  # [B, nh, T, dh]
        ctx = node("Transpose", [ctx], n + "ctx/bthd", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, c_hidden_shape], n + "ctx")
        o = dense(ctx, p + "attention.output.dense", n + "attn_out")
        x = layer_norm(node("Add", [o, x], n + "attn_res"), p + "attention.output.LayerNorm", n + "attn_ln")
        # MLP with exact GELU: 0.5 * h * (1 + erf(h / sqrt 2)).
        h = dense(x, p + "intermediate.dense", n + "inter")
        e = node("Erf", [node("Div", [h, c_sqrt2], n + "gelu/div")], n + "gelu/erf")
        e = node("Add", [e, c_one], n + "gelu/add1")
        g = node("Mul", [node("Mul", [h, e], n + "gelu/mul_x"), c_half], n + "gelu")
        o = dense(g, p + "output.dense", n + "mlp_out")
        x = layer_norm(node("Add", [o, x], n + "mlp_res"), p + "output.LayerNorm", n + "out_ln")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))

    skipped = sorted(k for k in w if k not in used)
    unexpected = [k for k in skipped if not (k == "embeddings.position_ids" or k.startswith("pooler."))]
    assert not unexpected, f"unused weights: {unexpected}"

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", H])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="inferd scripts/build_minilm_onnx.py",
        producer_version=SCRIPT_VERSION,
        doc_string="BERT encoder of sentence-transformers/all-MiniLM-L6-v2 (no pooler); "
        "mean-pool over attention_mask and L2-normalise for sentence embeddings.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model, len(nodes), skipped


# --------------------------------------------------------------------------------------------
# Validation


def validate(onnx_path):
    import json

    import numpy as np
    import onnxruntime as ort

    cases = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state"]

    def run(ids, mask):
        return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def masked_mean(hidden, mask):
        mf = mask[..., None].astype(np.float64)
        return (hidden.astype(np.float64) * mf).sum(1) / np.maximum(mf.sum(1), 1e-9)

    def l2(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    # Every case alone, unpadded.
    alone, alone_mean = [], []
    min_cos, max_diff, worst = float("inf"), 0.0, ""
    for c in cases:
        ids = np.array([c["ids"]], dtype=np.int64)
        mask = np.ones_like(ids)
        hs = run(ids, mask)
        assert hs.shape == (1, ids.shape[1], 384) and hs.dtype == np.float32, hs.shape
        mean = masked_mean(hs, mask)[0]
        e = l2(mean)
        ref = np.asarray(c["embedding"], dtype=np.float64)
        cos = float(e @ ref / np.linalg.norm(ref))
        d = float(np.abs(e - ref).max())
        if cos < min_cos:
            min_cos, worst = cos, c["text"]
        max_diff = max(max_diff, d)
        alone.append(e)
        alone_mean.append(mean)
    log(f"{len(cases)} fixture cases alone: min cosine {min_cos:.10f} (1 - cos {1 - min_cos:.1e}, text {worst[:40]!r}), "
        f"max |diff| {max_diff:.2e}")
    assert min_cos >= COSINE_MIN, (min_cos, worst)

    # Padded, masked batch of 8 mixed lengths (spread over the sorted token counts).
    order = sorted(range(len(cases)), key=lambda i: len(cases[i]["ids"]))
    pick = [order[round(j * (len(order) - 1) / 7)] for j in range(8)]
    T = max(len(cases[i]["ids"]) for i in pick)
    ids = np.zeros((8, T), dtype=np.int64)  # pad id 0
    mask = np.zeros((8, T), dtype=np.int64)
    for r, i in enumerate(pick):
        n = len(cases[i]["ids"])
        ids[r, :n] = cases[i]["ids"]
        mask[r, :n] = 1
    hs = run(ids, mask)
    assert np.isfinite(hs).all()
    mean = masked_mean(hs, mask)
    e = l2(mean)
    d_mean = max(float(np.abs(mean[r] - alone_mean[i]).max()) for r, i in enumerate(pick))
    d_norm = max(float(np.abs(e[r] - alone[i]).max()) for r, i in enumerate(pick))
    lens = [len(cases[i]["ids"]) for i in pick]
    log(f"padded batch of 8 (lengths {lens}, padded to {T}) vs alone: max |diff| masked mean "
        f"{d_mean:.2e}, normalised {d_norm:.2e}")
    assert d_mean <= BATCH_TOL and d_norm <= BATCH_TOL, (d_mean, d_norm)
    return min_cos, max_diff, d_mean, d_norm


# --------------------------------------------------------------------------------------------


def main():
    args = sys.argv[1:]
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        sys.exit("usage: build_minilm_onnx.py [--force] [MODEL_DIR]")
    model_dir = Path(args[0]) if args else DEFAULT_MODEL_DIR
    st = model_dir / "model.safetensors"
    if not st.is_file():
        sys.exit(f"build_minilm_onnx: error: {st} not found: run scripts/fetch_minilm.sh first")
    out = model_dir / ONNX_NAME
    stamp = model_dir / STAMP_NAME

    sha = sha256_file(st)
    stamp_want = f"build_minilm_onnx v{SCRIPT_VERSION} safetensors-sha256:{sha}"
    try:
        stamp_have = stamp.read_text().split("\n")[0]
    except OSError:
        stamp_have = None
    if not force and stamp_have == stamp_want and out.is_file() and out.stat().st_size > 0:
        return  # fast path: quiet

    # One thread everywhere: small matrices, busy cores, reproducible sums.
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(v, "1")
    import onnx

    t0 = time.perf_counter()
    log(f"building {out}")
    model, n_nodes, skipped = build_model(model_dir)
    t1 = time.perf_counter()
    tmp = model_dir / f".{ONNX_NAME}.tmp.{os.getpid()}"
    try:
        onnx.save_model(model, str(tmp))
        size = tmp.stat().st_size
        log(f"graph: {n_nodes} nodes, {len(model.graph.initializer)} initializers, opset {OPSET}, "
            f"ir_version {IR_VERSION}, {size} bytes; skipped weights: {', '.join(skipped)}")
        validate(tmp)
        t2 = time.perf_counter()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        stamp.unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    stamp_tmp = model_dir / f"{STAMP_NAME}.tmp.{os.getpid()}"
    stamp_tmp.write_text(f"{stamp_want}\nmodel.onnx bytes {size}\n")
    os.replace(stamp_tmp, stamp)
    log(f"done: build {t1 - t0:.2f}s, save + validate {t2 - t1:.2f}s, total {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
