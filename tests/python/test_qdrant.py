"""Qdrant's own Python client (qdrant-client 1.20, REST) against inferd's Qdrant-compatible
routes, unchanged but for its URL and an inferd key as its `api_key`: collections created,
described, listed and dropped; points upserted (as points and as a batch), retrieved and
deleted (by ids and by filter), scrolled and counted; queries by vector, with payload
filters, offsets and thresholds, and by point id;
every answer checked against a brute-force search in NumPy. Refusals arrive as the client's
own exception with inferd's message."""

import hashlib
import json

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from conftest import MODEL_REPOSITORY, brute, launch, stop

KEY = "qdrant-client-test-key"
DIM = 8


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    keys = tmp_path_factory.mktemp("qdrant-keys") / "keys.json"
    keys.write_text(json.dumps({"keys": [
        {"name": "qdrant-sdk", "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
         "scopes": ["admin"]}]}))
    srv = launch(MODEL_REPOSITORY, tmp_path_factory.mktemp("qdrant-data"),
                 auth=("--api-keys", str(keys)))
    c = QdrantClient(url=f"http://{srv.http_url}", api_key=KEY, prefer_grpc=False,
                     https=False, timeout=30)
    yield c
    c.close()
    stop(srv)


def vectors(n, seed):
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("distance,metric", [
    (models.Distance.COSINE, "cosine"), (models.Distance.DOT, "dot"),
    (models.Distance.EUCLID, "l2")])
def test_a_collection_round_trip_matches_brute_force(client, distance, metric):
    name = f"docs_{metric}"
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=distance))
    assert client.collection_exists(name)
    data = vectors(300, seed=7)
    cities = ["paris", "rome", "oslo"]
    client.upsert(name, points=[
        models.PointStruct(id=i, vector=data[i].tolist(),
                           payload={"city": cities[i % 3], "n": i})
        for i in range(200)])
    # The rest as one batch of columns.
    client.upsert(name, points=models.Batch(
        ids=list(range(200, 300)), vectors=data[200:].tolist(),
        payloads=[{"city": cities[i % 3], "n": i} for i in range(200, 300)]))
    info = client.get_collection(name)
    assert info.points_count == 300
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == distance

    q = vectors(1, seed=99)[0]
    want_ids, want_scores = brute(data, q, metric, 10)
    got = client.query_points(name, query=q.tolist(), limit=10,
                              search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in got] == want_ids
    np.testing.assert_allclose([p.score for p in got], want_scores, rtol=1e-4, atol=1e-5)
    assert got[0].payload == {"city": cities[want_ids[0] % 3], "n": want_ids[0]}

    # A payload filter, an offset, and the graph (not exact) at a generous ef.
    flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="rome"))])
    want_ids, _ = brute(data, q, metric, 8, keep=lambda i: cities[i % 3] == "rome")
    got = client.query_points(name, query=q.tolist(), query_filter=flt, limit=5, offset=3,
                              with_payload=["city"],
                              search_params=models.SearchParams(hnsw_ef=256)).points
    assert [p.id for p in got] == want_ids[3:8]
    assert all(p.payload == {"city": "rome"} for p in got)

    # By point id: that point's vector, the point itself left out.
    want_ids, _ = brute(data, data[5], metric, 4)
    got = client.query_points(name, query=5, limit=3,
                              search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in got] == [i for i in want_ids if i != 5][:3]

    # Retrieve, delete, retrieve.
    recs = client.retrieve(name, ids=[3, 4, 999], with_vectors=True)
    assert sorted(r.id for r in recs) == [3, 4]
    # Cosine collections keep vectors normalised, as Qdrant does.
    stored = data[3] / np.linalg.norm(data[3]) if metric == "cosine" else data[3]
    np.testing.assert_allclose(next(r for r in recs if r.id == 3).vector, stored, rtol=1e-5)
    client.delete(name, points_selector=models.PointIdsList(points=[3]))
    assert [r.id for r in client.retrieve(name, ids=[3, 4])] == [4]
    # Scroll: every Rome point, in id order, in pages; count agrees.
    seen, offset = [], None
    while True:
        page, offset = client.scroll(name, scroll_filter=flt, limit=40, offset=offset,
                                     with_payload=True)
        seen.extend(p.id for p in page)
        assert all(p.payload["city"] == "rome" for p in page)
        if offset is None:
            break
    rome = [i for i in range(300) if cities[i % 3] == "rome" and i != 3]
    assert seen == rome
    assert client.count(name, count_filter=flt).count == len(rome)
    assert client.count(name).count == 299
    # Delete by filter: the Oslo points go, the rest stay.
    oslo = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="oslo"))])
    client.delete(name, points_selector=models.FilterSelector(filter=oslo))
    assert client.count(name, count_filter=oslo).count == 0
    assert client.count(name).count == 299 - sum(1 for i in range(300) if cities[i % 3] == "oslo" and i != 3)
    names = [c.name for c in client.get_collections().collections]
    assert name in names
    client.delete_collection(name)
    assert not client.collection_exists(name)


def test_uuid_ids_and_a_score_threshold(client):
    name = "uuids"
    client.create_collection(name, vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE))
    a, b = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "ab0e5e5a-0a46-4ebd-9a41-3a7a1f9a5d2b"
    client.upsert(name, points=[models.PointStruct(id=a, vector=[1.0, 0.0]),
                                models.PointStruct(id=b, vector=[0.0, 1.0])])
    got = client.query_points(name, query=[1.0, 0.1], limit=5, score_threshold=0.5).points
    assert [p.id for p in got] == [a]
    client.delete_collection(name)


def test_refusals_are_the_clients_exceptions_with_inferds_message(client):
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection("named", vectors_config={"text": models.VectorParams(
            size=4, distance=models.Distance.COSINE)})
    assert "named vectors are not supported" in str(e.value)
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection("manhattan", vectors_config=models.VectorParams(
            size=4, distance=models.Distance.MANHATTAN))
    assert "Manhattan" in str(e.value)
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points("no_such_collection", query=[0.0] * 4)
    assert e.value.status_code == 404
    # A wrong key: the client reaches inferd's access control and is refused.
    with pytest.raises(UnexpectedResponse) as e:
        QdrantClient(url=client._client.rest_uri, api_key="wrong", https=False,
                     check_compatibility=False).get_collections()
    assert e.value.status_code == 401
