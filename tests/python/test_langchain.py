"""LangChain's Qdrant integration (langchain-qdrant's `QdrantVectorStore`, on qdrant-client)
against inferd's Qdrant-compatible routes, unchanged but for its URL and an inferd key, with
the embeddings coming from inferd's own /v1/embeddings (OpenAI's SDK, the all-MiniLM-L6-v2
sentence encoder): the store creates its collection, adds texts with metadata, and answers
similarity searches (plain, filtered on metadata, with scores, and maximal marginal
relevance) that equal a brute-force cosine ranking of the same vectors in NumPy; documents
are fetched and deleted by id."""

import uuid

import numpy as np
import openai
import pytest
from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

from conftest import brute, launch_minilm, stop

KEY = "langchain-test-key"
COLLECTION = "lc_docs"

DOCS = [
    ("animals", "The cat slept on the warm windowsill all afternoon."),
    ("animals", "A dog chased the ball across the park."),
    ("animals", "Owls hunt mice at night with silent wings."),
    ("animals", "The horse galloped along the beach at dawn."),
    ("weather", "Heavy rain is expected over the weekend."),
    ("weather", "A cold front brings snow to the mountains."),
    ("weather", "The heatwave pushed temperatures above forty degrees."),
    ("weather", "Fog lingered over the harbour until noon."),
    ("code", "The function returns an error when the file is missing."),
    ("code", "Rust's borrow checker rejects the dangling reference."),
    ("code", "The query planner chose an index scan over the table."),
    ("code", "A race condition corrupted the shared counter."),
]
TEXTS = [t for _, t in DOCS]
IDS = [str(uuid.UUID(int=i + 1)) for i in range(len(DOCS))]
QUERIES = ["pets playing outside", "what will the weather be like", "a bug in the program"]


class InferdEmbeddings(Embeddings):
    """LangChain embeddings computed by inferd's OpenAI-compatible endpoint."""

    def __init__(self, client):
        self.client = client

    def embed_documents(self, texts):
        r = self.client.embeddings.create(model="minilm", input=list(texts), encoding_format="float")
        return [d.embedding for d in sorted(r.data, key=lambda d: d.index)]

    def embed_query(self, text):
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def inferd(tmp_path_factory):
    srv = launch_minilm(tmp_path_factory, "langchain", KEY, ["admin"])
    yield srv
    stop(srv)


@pytest.fixture(scope="module")
def embeddings(inferd):
    return InferdEmbeddings(openai.OpenAI(base_url=f"http://{inferd.http_url}/v1", api_key=KEY,
                                          max_retries=0))


@pytest.fixture(scope="module")
def store(inferd, embeddings):
    # The integration's own constructor: it checks for the collection, creates it with the
    # embeddings' size and cosine distance, and upserts the texts as LangChain payloads.
    return QdrantVectorStore.from_texts(
        TEXTS, embeddings, metadatas=[{"topic": topic, "n": i} for i, (topic, _) in enumerate(DOCS)],
        ids=IDS, url=f"http://{inferd.http_url}", api_key=KEY, prefer_grpc=False, https=False,
        collection_name=COLLECTION)


@pytest.fixture(scope="module")
def vectors(embeddings):
    return np.array(embeddings.embed_documents(TEXTS), dtype=np.float64)


def test_the_store_made_its_collection_with_the_embeddings_shape(store):
    info = store.client.get_collection(COLLECTION)
    assert info.points_count == len(DOCS)
    assert info.config.params.vectors.size == 384
    assert info.config.params.vectors.distance == models.Distance.COSINE


def test_similarity_search_matches_brute_force(store, embeddings, vectors):
    for query in QUERIES:
        got = store.similarity_search_with_score(query, k=4)
        want, scores = brute(vectors, embeddings.embed_query(query), "cosine", 4)
        assert [d.page_content for d, _ in got] == [TEXTS[i] for i in want], query
        np.testing.assert_allclose([s for _, s in got], scores, atol=1e-5)
        for (doc, _), i in zip(got, want):
            assert doc.metadata["topic"] == DOCS[i][0]
            assert doc.metadata["n"] == i
            assert doc.metadata["_id"] == IDS[i]
            assert doc.metadata["_collection_name"] == COLLECTION


def test_a_metadata_filter_narrows_the_search(store, embeddings, vectors):
    flt = models.Filter(must=[models.FieldCondition(key="metadata.topic",
                                                    match=models.MatchValue(value="weather"))])
    got = store.similarity_search_with_score("pets playing outside", k=3, filter=flt)
    want, scores = brute(vectors, embeddings.embed_query("pets playing outside"), "cosine", 3,
                         keep=lambda i: DOCS[i][0] == "weather")
    assert [d.page_content for d, _ in got] == [TEXTS[i] for i in want]
    np.testing.assert_allclose([s for _, s in got], scores, atol=1e-5)
    ranged = models.Filter(must=[models.FieldCondition(key="metadata.n",
                                                       range=models.Range(gte=8))])
    got = store.similarity_search("a bug in the program", k=10, filter=ranged)
    assert sorted(d.metadata["n"] for d in got) == list(range(8, 12))


def mmr(vectors, q, k, fetch_k, diversity):
    """Qdrant's maximal marginal relevance over the fetch_k nearest (cosine): the nearest
    first, then each pick maximising λ·sim(q, d) − (1 − λ)·max sim(d, picked), λ = 1 − diversity."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cands, _ = brute(vectors, q, "cosine", fetch_k)
    rel = {i: float(x[i] @ (np.asarray(q) / np.linalg.norm(q))) for i in cands}
    lam, picked = 1.0 - diversity, [cands[0]]
    while len(picked) < k:
        left = [i for i in cands if i not in picked]
        picked.append(max(left, key=lambda i: lam * rel[i] - (1 - lam) * max(x[i] @ x[j] for j in picked)))
    return picked


def test_maximal_marginal_relevance_matches_qdrants_definition(store, embeddings, vectors):
    # langchain-qdrant asks the server for MMR (query {"nearest", "mmr"}), passing its
    # lambda_mult as Qdrant's `diversity`; the candidates come back with their vectors.
    query = "what will the weather be like"
    q = embeddings.embed_query(query)
    for lambda_mult in (0.2, 0.5, 0.9):
        got = store.max_marginal_relevance_search(query, k=4, fetch_k=8, lambda_mult=lambda_mult)
        want = mmr(vectors, q, 4, 8, diversity=lambda_mult)
        assert [d.page_content for d in got] == [TEXTS[i] for i in want], lambda_mult
    plain, _ = brute(vectors, q, "cosine", 4)
    diverse = mmr(vectors, q, 4, 8, diversity=0.9)
    assert diverse != plain, "the check would not notice MMR being ignored"


def test_documents_by_id_and_deletion(store, embeddings, vectors):
    docs = store.get_by_ids(IDS[:2])
    assert sorted(d.page_content for d in docs) == sorted(TEXTS[:2])
    top, _ = brute(vectors, embeddings.embed_query("pets playing outside"), "cosine", 1)
    assert store.delete(ids=[IDS[top[0]]])
    assert store.client.count(COLLECTION).count == len(DOCS) - 1
    got = store.similarity_search("pets playing outside", k=4)
    want, _ = brute(vectors, embeddings.embed_query("pets playing outside"), "cosine", 4,
                    keep=lambda i: i != top[0])
    assert [d.page_content for d in got] == [TEXTS[i] for i in want]
