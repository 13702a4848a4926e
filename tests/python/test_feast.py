"""Feast's own SDK (`feast` 0.67) with the documented remote online store pointed at inferd's
`/api/features`, unchanged: feature views applied to a local Feast registry, rows written with
`write_to_online_store`, read back with `get_online_features` (by list, with and without
full feature names, a missing entity, int64 and string join keys) and compared with what was
written; the feature server's push shape; and inferd's refusals in the errors the SDK
raises."""

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.types import Float32, Float64, Int64, String
from feast.value_type import ValueType

from conftest import MODEL_REPOSITORY, launch, stop


def put_view(srv, name, spec):
    req = urllib.request.Request(
        f"http://{srv.http_url}/api/feature-views/{name}",
        data=json.dumps(spec).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 201)


@pytest.fixture(scope="module")
def feast(tmp_path_factory):
    srv = launch(MODEL_REPOSITORY, tmp_path_factory.mktemp("feast-data"))
    # The views as inferd knows them.
    put_view(srv, "driver_stats", {
        "entities": ["driver_id"], "ttl": "1d",
        "features": [{"name": "conv_rate", "type": "float32"}, {"name": "acc_rate", "type": "float64"},
                     {"name": "trips", "type": "int64"}]})
    put_view(srv, "city_stats", {
        "entities": ["city"], "ttl": "1d", "features": [{"name": "name", "type": "string"}]})
    # And as Feast knows them: a local registry, the remote online store at inferd.
    repo = tmp_path_factory.mktemp("feast-repo")
    store = FeatureStore(config=RepoConfig(
        project="inferd_e2e",
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={"type": "remote", "path": f"http://{srv.http_url}/api/features"},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    ))
    source = FileSource(path=str(repo / "unused.parquet"), timestamp_field="event_timestamp")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING)
    driver_stats = FeatureView(
        name="driver_stats", entities=[driver], ttl=timedelta(days=1), source=source,
        schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float32),
                Field(name="acc_rate", dtype=Float64), Field(name="trips", dtype=Int64)])
    city_stats = FeatureView(
        name="city_stats", entities=[city], ttl=timedelta(days=1), source=source,
        schema=[Field(name="city", dtype=String), Field(name="name", dtype=String)])
    # A view Feast has and inferd does not.
    ghost = FeatureView(
        name="ghost", entities=[driver], ttl=timedelta(days=1), source=source,
        schema=[Field(name="driver_id", dtype=Int64), Field(name="x", dtype=Int64)])
    store.apply([driver, city, driver_stats, city_stats, ghost])
    yield store, srv
    stop(srv)


def test_write_to_online_store_then_get_online_features(feast):
    store, _ = feast
    now = datetime.now(timezone.utc).replace(microsecond=0)
    df = pd.DataFrame({
        "driver_id": [1001, 1002],
        "event_timestamp": [now - timedelta(minutes=5), now],
        "conv_rate": [0.25, 0.75],
        "acc_rate": [0.5, 0.125],
        "trips": [10, 20],
    })
    store.write_to_online_store("driver_stats", df)
    got = store.get_online_features(
        features=["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:trips"],
        entity_rows=[{"driver_id": 1002}, {"driver_id": 1001}, {"driver_id": 4242}],
    ).to_dict()
    assert got["driver_id"] == [1002, 1001, 4242]
    assert got["conv_rate"][:2] == pytest.approx([0.75, 0.25])
    assert got["acc_rate"][:2] == [0.125, 0.5]
    assert got["trips"] == [20, 10, None]
    assert got["conv_rate"][2] is None
    full = store.get_online_features(
        features=["driver_stats:trips"], entity_rows=[{"driver_id": 1001}],
        full_feature_names=True,
    ).to_dict()
    assert full == {"driver_id": [1001], "driver_stats__trips": [10]}


def test_string_join_keys_and_an_older_write_losing(feast):
    store, _ = feast
    now = datetime.now(timezone.utc)
    store.write_to_online_store("city_stats", pd.DataFrame({
        "city": ["paris"], "event_timestamp": [now], "name": ["Paris"]}))
    # An older event for the same key does not replace the newer one.
    store.write_to_online_store("city_stats", pd.DataFrame({
        "city": ["paris"], "event_timestamp": [now - timedelta(hours=1)], "name": ["Lutetia"]}))
    got = store.get_online_features(
        features=["city_stats:name"], entity_rows=[{"city": "paris"}]).to_dict()
    assert got == {"city": ["paris"], "name": ["Paris"]}


def test_the_feature_servers_push_shape(feast):
    store, srv = feast
    body = {"push_source_name": "driver_stats", "to": "online", "allow_registry_cache": True,
            "df": {"driver_id": [2001], "event_timestamp": ["2026-01-01T00:00:00"],
                   "conv_rate": [0.5], "acc_rate": [1.0], "trips": [3]}}
    req = urllib.request.Request(
        f"http://{srv.http_url}/api/features/push", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read()) == {"written": 1, "stale": 0}
    got = store.get_online_features(
        features=["driver_stats:trips"], entity_rows=[{"driver_id": 2001}]).to_dict()
    assert got["trips"] == [3]


def test_errors_reach_the_sdk_readably(feast):
    """inferd's message is in the exception Feast's client raises for a refused call."""
    store, _ = feast
    with pytest.raises(RuntimeError) as e:
        store.write_to_online_store("ghost", pd.DataFrame({
            "driver_id": [1], "event_timestamp": [datetime.now(timezone.utc)], "x": [1]}))
    assert "404" in str(e.value) and "ghost" in str(e.value)
    with pytest.raises(RuntimeError) as e:
        store.get_online_features(features=["driver_stats:no_such_feature"],
                                  entity_rows=[{"driver_id": 1}])
    assert "no_such_feature" in str(e.value)
