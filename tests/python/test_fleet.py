"""Three inferd replicas sharing one registry in S3-compatible object storage (moto's server,
started here, one request at a time so its conditional writes are atomic as S3's are; see
s3_server.py), each with its own cache: what is uploaded, moved or deleted through one
replica serves on all, under load, with no failed request; racing uploads through two
replicas get distinct versions; a replica killed with SIGKILL loses no acknowledged upload,
and one started later catches up. Outputs are compared with ONNX Runtime's own on the same
artifacts."""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests

from conftest import MODEL_REPOSITORY, free_ports, launch, log_tail, stop

BUCKET = "inferd-fleet"
POLL_MS = 200
# A generous bound on convergence: a failure timeout, not a speed target (BENCHMARKS.md
# records the measured convergence time).
CONVERGE_S = 60
V1 = MODEL_REPOSITORY / "mlp" / "1" / "model.onnx"
V2 = MODEL_REPOSITORY / "mlp_v2" / "1" / "model.onnx"
ROWS = np.random.default_rng(7).random((4, 64), dtype=np.float32)


def expected(path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": ROWS})[0]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import boto3

    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("s3_server.py")), str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the S3 server did not start:\n{log_tail(log)}")
            time.sleep(0.1)
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    proc.kill()
    proc.wait()


def replica(tmp_path_factory, s3, tag):
    flags = [
        "--registry", f"s3://{BUCKET}/models",
        "--registry-poll-ms", str(POLL_MS),
        "--registry-option", f"endpoint={s3}",
        "--registry-option", "allow_http=true",
        "--registry-option", "access_key_id=test",
        "--registry-option", "secret_access_key=test",
        "--registry-option", "region=us-east-1",
    ]
    return launch(tmp_path_factory.mktemp(f"{tag}-cache"), tmp_path_factory.mktemp(f"{tag}-data"), flags)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, s3):
    replicas = [replica(tmp_path_factory, s3, f"replica{i}") for i in (1, 2, 3)]
    yield replicas
    for r in replicas:
        stop(r)


def url(r, path):
    return f"http://{r.http_url}{path}"


def upload(r, model, artifact, wait=True):
    body = Path(artifact).read_bytes()
    resp = requests.post(
        url(r, f"/api/models/{model}/versions"),
        params={"wait": "true"} if wait else {},
        data=body, timeout=60,
    )
    # 201: validated (wait), 202: stored, validation under way.
    assert resp.status_code == (201 if wait else 202), resp.text
    info = resp.json()
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    return info["version"]


def set_alias(r, model, alias, version):
    resp = requests.put(url(r, f"/api/models/{model}/aliases/{alias}"), json={"version": version}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def model_info(r, model):
    resp = requests.get(url(r, f"/api/models/{model}"), timeout=10)
    return resp.json() if resp.status_code == 200 else None


def infer(session, r, model, version=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "input", "shape": list(ROWS.shape), "datatype": "FP32",
                        "data": ROWS.ravel().tolist()}]}
    resp = session.post(url(r, path), json=body, timeout=30)
    if resp.status_code != 200:
        return resp.status_code, None, resp.text
    out = resp.json()
    data = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(out["outputs"][0]["shape"])
    return 200, out["model_version"], data


def wait_until(what, check):
    deadline = time.monotonic() + CONVERGE_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {CONVERGE_S} s: {what}")
        time.sleep(0.05)


class Load:
    """One thread per replica sending the same inference in a loop; keeps every answer."""

    def __init__(self, replicas, model):
        self.replicas, self.model = replicas, model
        self.stop = threading.Event()
        self.answers = {id(r): [] for r in replicas}
        self.threads = [threading.Thread(target=self.run, args=(r,), daemon=True) for r in replicas]

    def run(self, r):
        session = requests.Session()
        while not self.stop.is_set():
            try:
                self.answers[id(r)].append(infer(session, r, self.model))
            except requests.RequestException as e:
                self.answers[id(r)].append((None, None, str(e)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def count(self, r):
        return len(self.answers[id(r)])

    def latest_version(self, r):
        answers = self.answers[id(r)]
        return answers[-1][1] if answers else None

    def check(self, r, references):
        """Every answer succeeded, and equals ONNX Runtime's output of the version it names."""
        answers = self.answers[id(r)]
        assert answers, "the load sent nothing"
        failed = [a for a in answers if a[0] != 200]
        assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[0]}"
        for _, version, data in answers:
            np.testing.assert_allclose(data, references[version], rtol=1e-5, atol=1e-6)


def test_an_upload_through_one_replica_serves_on_every_replica(fleet):
    r1 = fleet[0]
    version = upload(r1, "digits-a", V1)
    assert version == 1
    want = expected(V1)
    for r in fleet:
        wait_until(f"version 1 READY on {r.http_url}",
                   lambda r=r: (i := model_info(r, "digits-a")) is not None and i["default_version"] == 1)
        status, served, data = infer(requests.Session(), r, "digits-a")
        assert (status, served) == (200, "1"), data
        np.testing.assert_allclose(data, want, rtol=1e-5, atol=1e-6)
        info = model_info(r, "digits-a")
        assert info["versions"][0]["sha256"] == hashlib.sha256(V1.read_bytes()).hexdigest()


def test_moving_production_on_one_replica_switches_all_with_no_failed_request(fleet):
    r1, r2, _ = fleet
    assert upload(r1, "digits-b", V1) == 1
    assert upload(r1, "digits-b", V2) == 2
    set_alias(r1, "digits-b", "production", 1)
    for r in fleet:
        wait_until(f"production=1 on {r.http_url}",
                   lambda r=r: (i := model_info(r, "digits-b")) is not None
                   and i["aliases"].get("production", {}).get("version") == 1
                   and infer(requests.Session(), r, "digits-b")[1] == "1")
    references = {"1": expected(V1), "2": expected(V2)}
    assert not np.allclose(references["1"], references["2"]), "the two versions must differ"
    with Load(fleet, "digits-b") as load:
        wait_until("load on every replica", lambda: all(load.count(r) >= 20 for r in fleet))
        moved = time.monotonic()
        set_alias(r2, "digits-b", "production", 2)
        wait_until("every replica serving version 2",
                   lambda: all(load.latest_version(r) == "2" for r in fleet))
        converged = time.monotonic() - moved
        marks = {id(r): load.count(r) for r in fleet}
        wait_until("more load after the switch", lambda: all(load.count(r) >= marks[id(r)] + 20 for r in fleet))
    print(f"\nalias convergence over 3 replicas (poll {POLL_MS} ms): {converged * 1000:.0f} ms")
    for r in fleet:
        load.check(r, references)
        # Once a replica serves version 2 it never goes back.
        versions = [v for _, v, _ in load.answers[id(r)]]
        first2 = versions.index("2")
        assert set(versions[first2:]) == {"2"}


def test_racing_uploads_through_two_replicas_get_distinct_versions(fleet):
    r1, _, r3 = fleet
    per_replica = 4
    barrier = threading.Barrier(2 * per_replica)
    got, errors = [], []

    def send(r, artifact):
        barrier.wait()
        try:
            got.append((upload(r, "digits-c", artifact, wait=False), artifact))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(r, art))
               for r, art in [(r1, V1), (r3, V2)] for _ in range(per_replica)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    versions = sorted(v for v, _ in got)
    assert versions == list(range(1, 2 * per_replica + 1)), versions
    digests = {v: hashlib.sha256(Path(a).read_bytes()).hexdigest() for v, a in got}
    for r in fleet:
        def listed(r=r):
            info = model_info(r, "digits-c")
            return info is not None and {v["version"]: v["sha256"] for v in info["versions"]
                                         if v["status"] == "READY"} == digests
        wait_until(f"all {len(versions)} versions READY on {r.http_url}", listed)


def test_a_killed_replica_loses_no_acknowledged_upload_and_a_new_one_catches_up(fleet, tmp_path_factory, s3):
    r1, r2, _ = fleet
    doomed = replica(tmp_path_factory, s3, "doomed")
    try:
        assert upload(doomed, "digits-d", V1) == 1
        set_alias(doomed, "digits-d", "production", 1)
        for r in (r1, r2):
            wait_until(f"digits-d on {r.http_url}",
                       lambda r=r: infer(requests.Session(), r, "digits-d")[1] == "1")
        references = {"1": expected(V1), "2": expected(V2)}
        with Load([r1, r2], "digits-d") as load:
            acknowledged = upload(doomed, "digits-d", V2, wait=True)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()
            assert acknowledged == 2
            for r in (r1, r2):
                wait_until(f"version 2 READY on {r.http_url} after the kill",
                           lambda r=r: any(v["version"] == 2 and v["status"] == "READY"
                                           for v in (model_info(r, "digits-d") or {"versions": []})["versions"]))
            set_alias(r1, "digits-d", "production", 2)
            wait_until("both survivors serving version 2",
                       lambda: all(load.latest_version(r) == "2" for r in (r1, r2)))
        for r in (r1, r2):
            load.check(r, references)
    finally:
        if doomed.process.poll() is None:
            stop(doomed)
    late = replica(tmp_path_factory, s3, "late")
    try:
        # Ready means loaded: the late replica serves the fleet's state from its first answer.
        info = model_info(late, "digits-d")
        assert info["aliases"]["production"]["version"] == 2
        status, served, data = infer(requests.Session(), late, "digits-d")
        assert (status, served) == (200, "2"), data
        np.testing.assert_allclose(data, references["2"], rtol=1e-5, atol=1e-6)
        assert {m for m in ("digits-a", "digits-b", "digits-c") if model_info(late, m)} == {
            "digits-a", "digits-b", "digits-c"}
    finally:
        stop(late)


def test_a_model_deleted_through_one_replica_stops_serving_on_all(fleet):
    r1, _, r3 = fleet
    assert upload(r1, "digits-e", V1) == 1
    for r in fleet:
        wait_until(f"digits-e on {r.http_url}", lambda r=r: model_info(r, "digits-e") is not None)
    resp = requests.delete(url(r3, "/api/models/digits-e"), timeout=30)
    assert resp.status_code in (200, 204), resp.text
    for r in fleet:
        wait_until(f"digits-e gone from {r.http_url}", lambda r=r: model_info(r, "digits-e") is None)
        status, _, text = infer(requests.Session(), r, "digits-e")
        assert status == 404, text


def test_a_cache_directory_that_holds_something_else_is_refused(tmp_path, s3):
    repo = tmp_path / "repo"
    (repo / "mine" / "1").mkdir(parents=True)
    from conftest import inferd_binary, server_env

    out = subprocess.run(
        [str(inferd_binary()), "serve", "--no-auth", "--data-dir", str(tmp_path / "data"),
         "--model-repository", str(repo), "--registry", f"s3://{BUCKET}/models",
         "--registry-option", f"endpoint={s3}", "--registry-option", "allow_http=true",
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, env=server_env(),
    )
    assert out.returncode != 0
    assert "is not empty and is not a cache of the registry" in out.stderr + out.stdout
    assert (repo / "mine" / "1").is_dir(), "the directory must be left as it was"
