"""End-to-end tests of inferd with Triton's Python client (tritonclient 2.41, HTTP and gRPC).

Every model and case in tests/fixtures/reference.json is sent over
  - HTTP with binary tensor data (binary_data=True for inputs and requested outputs),
  - HTTP with JSON tensor data (binary_data=False),
  - gRPC (raw_input_contents / raw_output_contents),
and each output is compared with the ONNX Runtime (CPU) reference.
"""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL_REPOSITORY = FIXTURES / "models"
REFERENCE_PATH = FIXTURES / "reference.json"

if not REFERENCE_PATH.exists():
    raise RuntimeError(f"{REFERENCE_PATH} is missing; run `python tests/fixtures/gen_models.py`")
REFERENCE = json.loads(REFERENCE_PATH.read_text(encoding="utf-8"))
MODELS = list(REFERENCE)
CASES = [(m, i) for m in MODELS for i in range(len(REFERENCE[m]))]

# inference modes and metadata protocols
MODES = ["http-binary", "http-json", "grpc"]
PROTOCOLS = ["http", "grpc"]

REQUIRED_EXTENSIONS = {
    "binary_tensor_data",
    "statistics",
    "model_configuration",
    "model_repository",
    "schedule_policy",
}

NP_DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": np.float32,  # tritonclient's numpy stand-in for bfloat16
    "BYTES": np.object_,
}
FLOAT_TYPES = {"FP16", "FP32", "FP64", "BF16"}

ONNX_TO_V2 = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
    onnx.TensorProto.BFLOAT16: "BF16",
}


def config_type(v2):
    return "TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}"


# --------------------------------------------------------------------------------------------
# expectations derived from the model files


def _load_signatures():
    """{model: {"inputs": {name: (v2, shape)}, "outputs": {...}, "batched": bool}} from the ONNX
    files; dynamic dims are -1."""
    sigs = {}
    for model in MODELS:
        m = onnx.load(str(MODEL_REPOSITORY / model / "1" / "model.onnx"), load_external_data=False)
        inits = {i.name for i in m.graph.initializer}

        def sig(values):
            out = {}
            for v in values:
                if v.name in inits:
                    continue
                tt = v.type.tensor_type
                shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                out[v.name] = (ONNX_TO_V2[tt.elem_type], shape)
            return out

        inputs, outputs = sig(m.graph.input), sig(m.graph.output)
        batched = all(s and s[0] == -1 for _, s in list(inputs.values()) + list(outputs.values()))
        sigs[model] = {"inputs": inputs, "outputs": outputs, "batched": batched}
    return sigs


SIGNATURES = _load_signatures()


def test_signatures_sanity():
    """The expectations above match the brief (guards against a silently regenerated model)."""
    assert SIGNATURES["mlp"]["inputs"] == {"input": ("FP32", [-1, 64])}
    assert SIGNATURES["mlp"]["outputs"] == {"probabilities": ("FP32", [-1, 10])}
    assert SIGNATURES["fixed_shape"]["inputs"] == {"x": ("FP32", [2, 3])}
    assert not SIGNATURES["fixed_shape"]["batched"]
    for model in MODELS:
        if model != "fixed_shape":
            assert SIGNATURES[model]["batched"], model


# --------------------------------------------------------------------------------------------
# helpers


def to_numpy(t):
    """A reference tensor as the numpy array tritonclient expects for its datatype."""
    dt = t["datatype"]
    if dt == "BYTES":
        flat = [s.encode("utf-8") for s in t["data"]]
        arr = np.empty(len(flat), dtype=np.object_)
        arr[:] = flat
    else:
        arr = np.array(t["data"], dtype=NP_DTYPES[dt])
    return arr.reshape(t["shape"])


def _bytes_list(arr):
    out = []
    for x in np.asarray(arr, dtype=np.object_).ravel():
        out.append(x.encode("utf-8") if isinstance(x, str) else bytes(x))
    return out


def assert_output(got, expected, where):
    dt = expected["datatype"]
    assert got is not None, f"{where}: output missing from the response"
    assert list(got.shape) == list(expected["shape"]), f"{where}: shape"
    exp = to_numpy(expected)
    if dt == "BYTES":
        assert _bytes_list(got) == _bytes_list(exp), where
    elif dt in FLOAT_TYPES:
        assert got.dtype == NP_DTYPES[dt], f"{where}: numpy dtype {got.dtype}"
        np.testing.assert_allclose(
            got.astype(np.float64), exp.astype(np.float64), atol=1e-5, rtol=0, err_msg=where
        )
    else:
        assert got.dtype == NP_DTYPES[dt], f"{where}: numpy dtype {got.dtype}"
        np.testing.assert_array_equal(got, exp, err_msg=where)


def output_datatype(result, name):
    out = result.get_output(name)
    if out is None:
        return None
    return out["datatype"] if isinstance(out, dict) else out.datatype


def client_for(mode, http_client, grpc_client):
    return grpc_client if mode == "grpc" else http_client


def make_inputs(mode, tensors):
    mod = grpcclient if mode == "grpc" else httpclient
    inputs = []
    for t in tensors:
        if isinstance(t, tuple):  # (name, datatype, ndarray)
            name, datatype, data = t
        else:  # a reference tensor
            name, datatype, data = t["name"], t["datatype"], to_numpy(t)
        inp = mod.InferInput(name, list(data.shape), datatype)
        if mode == "grpc":
            inp.set_data_from_numpy(data)
        else:
            inp.set_data_from_numpy(data, binary_data=(mode == "http-binary"))
        inputs.append(inp)
    return inputs


def make_outputs(mode, names):
    if mode == "grpc":
        return [grpcclient.InferRequestedOutput(n) for n in names]
    return [httpclient.InferRequestedOutput(n, binary_data=(mode == "http-binary")) for n in names]


def infer_case(mode, client, model, case, request_outputs=True):
    inputs = make_inputs(mode, case["inputs"])
    outputs = make_outputs(mode, [o["name"] for o in case["outputs"]]) if request_outputs else None
    return client.infer(model, inputs, outputs=outputs)


def check_result(result, model, case, where):
    for expected in case["outputs"]:
        name = expected["name"]
        assert output_datatype(result, name) == expected["datatype"], f"{where}/{name}: datatype"
        assert_output(result.as_numpy(name), expected, f"{where}/{name}")


def skip_unsupported(mode, case):
    types = {t["datatype"] for t in case["inputs"] + case["outputs"]}
    if mode == "http-json" and "BF16" in types:
        pytest.skip("BF16 cannot be sent as JSON tensor data (tritonclient requires binary_data=True)")


def stats_of(protocol, client, model=""):
    """get_inference_statistics normalised to {model name: {field: int}} (gRPC's JSON renders
    uint64 as strings and leaves out zero fields)."""
    if protocol == "http":
        raw = client.get_inference_statistics(model)
    else:
        raw = client.get_inference_statistics(model, as_json=True)
    assert isinstance(raw, dict) and "model_stats" in raw, raw
    out = {}
    for s in raw["model_stats"]:
        success = s.get("inference_stats", {}).get("success", {})
        out[s["name"]] = {
            "version": s.get("version", ""),
            "inference_count": int(s.get("inference_count", 0)),
            "execution_count": int(s.get("execution_count", 0)),
            "success_count": int(success.get("count", 0)),
        }
    return out


def mentions_word(message, word):
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", message) is not None


def expect_error(protocol, fn, *, http_status, grpc_status):
    with pytest.raises(InferenceServerException) as info:
        fn()
    e = info.value
    msg = e.message() or ""
    if protocol == "grpc":
        assert e.status() == grpc_status, f"status {e.status()!r}: {msg}"
    else:
        assert e.status() == http_status, f"status {e.status()!r}: {msg}"
    return msg


# --------------------------------------------------------------------------------------------
# server-level endpoints


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health(protocol, http_client, grpc_client):
    client = client_for(protocol, http_client, grpc_client)
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model), model


def test_http_unknown_model_not_ready(http_client):
    assert not http_client.is_model_ready("no_such_model")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_metadata(protocol, http_client, grpc_client):
    client = client_for(protocol, http_client, grpc_client)
    if protocol == "http":
        md = client.get_server_metadata()
        name, version, extensions = md.get("name"), md.get("version"), md.get("extensions", [])
    else:
        md = client.get_server_metadata()
        name, version, extensions = md.name, md.version, list(md.extensions)
    assert name
    assert version
    missing = REQUIRED_EXTENSIONS - set(extensions)
    assert not missing, f"extensions {extensions} lack {sorted(missing)}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_repository_index(protocol, http_client, grpc_client):
    if protocol == "http":
        index = http_client.get_model_repository_index()
        assert isinstance(index, list), f"HTTP repository index must be a JSON array: {index!r}"
    else:
        index = grpc_client.get_model_repository_index(as_json=True).get("models", [])
    by_name = {}
    for entry in index:
        by_name.setdefault(entry["name"], []).append(entry)
    for model in MODELS:
        assert model in by_name, f"{model} not in repository index {index}"
        states = [e.get("state") for e in by_name[model]]
        assert "READY" in states, f"{model}: states {states}"


# --------------------------------------------------------------------------------------------
# model metadata and configuration


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_metadata(protocol, model, http_client, grpc_client):
    sig = SIGNATURES[model]
    if protocol == "http":
        md = http_client.get_model_metadata(model)
        name, versions = md["name"], md.get("versions", [])
        inputs = {t["name"]: (t["datatype"], list(t["shape"])) for t in md["inputs"]}
        outputs = {t["name"]: (t["datatype"], list(t["shape"])) for t in md["outputs"]}
    else:
        md = grpc_client.get_model_metadata(model)
        name, versions = md.name, list(md.versions)
        inputs = {t.name: (t.datatype, list(t.shape)) for t in md.inputs}
        outputs = {t.name: (t.datatype, list(t.shape)) for t in md.outputs}
    assert name == model
    assert "1" in versions, versions
    assert inputs == sig["inputs"]
    assert outputs == sig["outputs"]


def _config_dims_ok(io, expected_dims):
    dims = [int(d) for d in io.get("dims", [])]
    if dims == expected_dims:
        return True
    # Triton's way of describing a tensor that is only the batch dim: dims [1], reshape [].
    if expected_dims == [] and dims == [1] and "reshape" in io:
        return [int(d) for d in io["reshape"].get("shape", [])] == []
    return False


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_config(protocol, model, http_client, grpc_client):
    sig = SIGNATURES[model]
    if protocol == "http":
        cfg = http_client.get_model_config(model)
        assert isinstance(cfg, dict)
    else:
        resp = grpc_client.get_model_config(model, as_json=True)
        assert "config" in resp, resp
        cfg = resp["config"]
    assert cfg.get("name") == model
    max_batch_size = int(cfg.get("max_batch_size", 0))  # proto3 JSON leaves out a 0
    if sig["batched"]:
        biggest = max(t["shape"][0] for case in REFERENCE[model] for t in case["inputs"])
        assert max_batch_size >= biggest, f"max_batch_size {max_batch_size} < {biggest}"
    else:
        assert max_batch_size == 0

    for kind, key in (("inputs", "input"), ("outputs", "output")):
        ios = {io["name"]: io for io in cfg.get(key, [])}
        assert set(ios) == set(sig[kind]), f"{key}: {sorted(ios)}"
        for name, (v2, shape) in sig[kind].items():
            io = ios[name]
            assert io.get("data_type") == config_type(v2), f"{name}: {io}"
            expected_dims = shape[1:] if sig["batched"] else shape
            assert _config_dims_ok(io, expected_dims), f"{name}: {io} (want dims {expected_dims})"


# --------------------------------------------------------------------------------------------
# inference


@pytest.mark.parametrize("model,case_index", CASES, ids=[f"{m}-case{i}" for m, i in CASES])
@pytest.mark.parametrize("mode", MODES)
def test_infer(mode, model, case_index, http_client, grpc_client):
    case = REFERENCE[model][case_index]
    skip_unsupported(mode, case)
    client = client_for(mode, http_client, grpc_client)
    result = infer_case(mode, client, model, case)
    check_result(result, model, case, f"{mode}/{model}/case{case_index}")


@pytest.mark.parametrize("mode", MODES)
def test_infer_all_outputs_by_default(mode, http_client, grpc_client):
    """No outputs requested: the server returns all of them (HTTP: as binary, because tritonclient
    then sets the request parameter binary_data_output=true)."""
    model = "int64_bytes"
    case = REFERENCE[model][1]
    client = client_for(mode, http_client, grpc_client)
    result = infer_case(mode, client, model, case, request_outputs=False)
    check_result(result, model, case, f"{mode}/{model}/all-outputs")
    if mode != "grpc":
        for o in result.get_response()["outputs"]:
            assert "binary_data_size" in o.get("parameters", {}), o


def test_http_mixed_binary_and_json_outputs(http_client):
    """One output as binary, the other as JSON, in one response."""
    model = "two_inputs"
    case = REFERENCE[model][1]
    inputs = make_inputs("http-binary", case["inputs"])
    outputs = [
        httpclient.InferRequestedOutput("sum", binary_data=False),
        httpclient.InferRequestedOutput("weighted", binary_data=True),
    ]
    result = http_client.infer(model, inputs, outputs=outputs)
    check_result(result, model, case, "http-mixed")
    params = {o["name"]: o.get("parameters", {}) for o in result.get_response()["outputs"]}
    assert "binary_data_size" not in params["sum"]
    assert "binary_data_size" in params["weighted"]


def test_http_only_requested_outputs(http_client):
    model = "two_inputs"
    case = REFERENCE[model][0]
    inputs = make_inputs("http-binary", case["inputs"])
    result = http_client.infer(
        model, inputs, outputs=[httpclient.InferRequestedOutput("weighted", binary_data=True)]
    )
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["weighted"]
    assert_output(result.as_numpy("weighted"), case["outputs"][1], "http/weighted-only")


# --------------------------------------------------------------------------------------------
# statistics


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inference_statistics(protocol, http_client, grpc_client):
    model = "mlp"
    client = client_for(protocol, http_client, grpc_client)
    mode = "grpc" if protocol == "grpc" else "http-binary"
    before = stats_of(protocol, client, model).get(model)
    assert before is not None
    requests = 0
    for case in REFERENCE[model]:
        infer_case(mode, client, model, case)
        requests += 1
    after = stats_of(protocol, client, model)[model]
    assert after["inference_count"] >= before["inference_count"] + requests, (before, after)
    assert after["execution_count"] >= 1
    assert after["execution_count"] > before["execution_count"], (before, after)
    assert after["success_count"] >= before["success_count"] + requests, (before, after)

    everything = stats_of(protocol, client)
    for m in MODELS:
        assert m in everything, f"{m} missing from get_inference_statistics()"


# --------------------------------------------------------------------------------------------
# errors


def _mlp_input(mode, datatype="FP32", shape=(1, 64)):
    dtype = NP_DTYPES[datatype]
    data = np.full(shape, 0.25, dtype=dtype)
    return make_inputs(mode, [("input", datatype, data)])


@pytest.mark.parametrize("mode", MODES)
def test_error_unknown_model(mode, http_client, grpc_client):
    client = client_for(mode, http_client, grpc_client)
    protocol = "grpc" if mode == "grpc" else "http"
    msg = expect_error(
        protocol,
        lambda: client.infer("no_such_model", _mlp_input(mode)),
        http_status="404",
        grpc_status="StatusCode.NOT_FOUND",
    )
    assert "no_such_model" in msg, msg


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_unknown_model_metadata(protocol, http_client, grpc_client):
    client = client_for(protocol, http_client, grpc_client)
    msg = expect_error(
        protocol,
        lambda: client.get_model_metadata("no_such_model"),
        http_status="404",
        grpc_status="StatusCode.NOT_FOUND",
    )
    assert "no_such_model" in msg, msg


@pytest.mark.parametrize("mode", MODES)
def test_error_wrong_datatype(mode, http_client, grpc_client):
    client = client_for(mode, http_client, grpc_client)
    protocol = "grpc" if mode == "grpc" else "http"
    msg = expect_error(
        protocol,
        lambda: client.infer("mlp", _mlp_input(mode, datatype="FP64")),
        http_status="400",
        grpc_status="StatusCode.INVALID_ARGUMENT",
    )
    assert mentions_word(msg, "input"), msg
    assert "FP32" in msg, msg


@pytest.mark.parametrize("mode", MODES)
def test_error_wrong_shape(mode, http_client, grpc_client):
    client = client_for(mode, http_client, grpc_client)
    protocol = "grpc" if mode == "grpc" else "http"
    msg = expect_error(
        protocol,
        lambda: client.infer("mlp", _mlp_input(mode, shape=(1, 63))),
        http_status="400",
        grpc_status="StatusCode.INVALID_ARGUMENT",
    )
    assert "64" in msg, msg


@pytest.mark.parametrize("mode", MODES)
def test_error_missing_input(mode, http_client, grpc_client):
    client = client_for(mode, http_client, grpc_client)
    protocol = "grpc" if mode == "grpc" else "http"
    a = np.ones((1, 8), dtype=np.float32)
    msg = expect_error(
        protocol,
        lambda: client.infer("two_inputs", make_inputs(mode, [("a", "FP32", a)])),
        http_status="400",
        grpc_status="StatusCode.INVALID_ARGUMENT",
    )
    assert mentions_word(msg, "b"), msg


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_still_serves_after_errors(protocol, http_client, grpc_client):
    client = client_for(protocol, http_client, grpc_client)
    mode = "grpc" if protocol == "grpc" else "http-binary"
    case = REFERENCE["mlp"][0]
    check_result(infer_case(mode, client, "mlp", case), "mlp", case, f"{mode}/after-errors")
    assert client.is_server_ready()
