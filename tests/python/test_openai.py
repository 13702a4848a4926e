"""OpenAI's own Python SDK against inferd's /v1 routes, unchanged but for its base URL and an
inferd API key: embeddings as floats and as base64 (the SDK's default when numpy is there, and
asked for explicitly), `dimensions`, the model list, and errors the SDK raises as its own
exception types. The vectors are compared with the independent NumPy reference recorded by
tests/fixtures/gen_embeddings.py."""

import base64
import json
import os
import shutil
import subprocess

import numpy as np
import openai
import pytest

from conftest import CACHE, FIXTURES, ROOT, launch_minilm, minilm_dir, stop

KEY = "openai-sdk-test-key"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    srv = launch_minilm(tmp_path_factory, "openai", KEY, ["infer"])
    yield openai.OpenAI(base_url=f"http://{srv.http_url}/v1", api_key=KEY, max_retries=0)
    stop(srv)


@pytest.fixture(scope="module")
def cases():
    return json.loads((FIXTURES / "embeddings.json").read_text())["cases"][:8]


def test_embeddings_match_the_reference_in_every_encoding(client, cases):
    texts = [c["text"] for c in cases]
    want = np.array([c["embedding"] for c in cases], dtype=np.float64)
    # The SDK's default: it asks for base64 and decodes it itself.
    default = client.embeddings.create(model="minilm", input=texts)
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    raw = client.embeddings.create(model="minilm", input=texts, encoding_format="base64")
    for r in (default, floats, raw):
        assert r.model == "minilm"
        assert [d.index for d in r.data] == list(range(len(texts)))
        assert r.usage.prompt_tokens == sum(c["tokens"] for c in cases)
    got_default = np.array([d.embedding for d in default.data])
    got_float = np.array([d.embedding for d in floats.data])
    # Explicitly asked for, base64 comes back as the string: little-endian float32 bytes.
    got_b64 = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data])
    assert got_b64.shape == (len(texts), 384)
    np.testing.assert_array_equal(got_b64, got_float.astype(np.float32))
    np.testing.assert_array_equal(got_default.astype(np.float32), got_b64)
    np.testing.assert_allclose(got_float, want, atol=2e-5)


def test_dimensions_and_the_user_field(client, cases):
    r = client.embeddings.create(model="minilm", input=cases[0]["text"], dimensions=384, user="u-1")
    assert len(r.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input="a cat", dimensions=128)
    assert "does not support 'dimensions' 128" in e.value.message
    assert "384 dimensions" in e.value.message


def test_token_arrays_embed_as_their_texts(client, cases):
    """Token ids of the model's own tokenizer (as TEI takes them; the SDK passes them through):
    the ids tokenizer.json gives a text, special tokens included, embed as the text does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    texts = [c["text"] for c in cases[:4]]
    ids = [tok.encode(t).ids for t in texts]
    want = np.array([c["embedding"] for c in cases[:4]])
    many = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in many.data]), want, atol=2e-5)
    assert many.usage.prompt_tokens == sum(len(i) for i in ids)
    one = client.embeddings.create(model="minilm", input=ids[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, want[0], atol=2e-5)
    # Without the special tokens the model sees something else, and says so in its numbers.
    bare = client.embeddings.create(model="minilm", input=ids[0][1:-1], encoding_format="float")
    assert np.abs(np.array(bare.data[0].embedding) - want[0]).max() > 1e-3


def test_the_model_list(client):
    assert [m.id for m in client.models.list()] == ["minilm"]
    m = client.models.retrieve("minilm")
    assert (m.id, m.object, m.owned_by) == ("minilm", "model", "inferd")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_errors_are_the_sdks_own(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="no-such-model", input="x")
    assert "no-such-model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=[[101, 1037, 10 ** 6]])
    assert "id 1000000, outside the model's vocabulary of 30522 ids" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=[[101, 102], "a cat"])
    assert "do not mix" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input=[[]])
    assert "empty token array" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="minilm", input="x", encoding_format="int8")
    assert "base64" in e.value.message
    bad_key = client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad_key.embeddings.create(model="minilm", input="x")


def test_openais_node_sdk_gets_the_same_vectors(client, cases):
    """The Node SDK asks for base64 unless told otherwise, and decodes it itself."""
    modules = CACHE / "node" / "node_modules"
    if shutil.which("node") is None or not (modules / "openai").is_dir():
        pytest.fail(f"node, or OpenAI's Node SDK under {modules}, is missing: run scripts/setup.sh")
    texts = [c["text"] for c in cases]
    out = subprocess.run(
        ["node", str(ROOT / "tests" / "node" / "openai_embeddings.cjs")],
        input=json.dumps(texts), capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "NODE_PATH": str(modules), "OPENAI_BASE_URL": str(client.base_url),
             "OPENAI_API_KEY": KEY, "INFERD_MODEL": "minilm"},
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    np.testing.assert_allclose(
        np.array(got["embeddings"]), np.array([c["embedding"] for c in cases]), atol=2e-5)
    assert got["models"] == ["minilm"]
    assert got["refused"]["status"] == 400
    assert "does not support 'dimensions' 7" in got["refused"]["message"]
