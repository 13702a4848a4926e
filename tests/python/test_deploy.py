"""The deployment assets, offline: the Kubernetes manifests validate against a pinned
Kubernetes version's schemas (kubernetes-validate), rendered by kustomize when kubectl is on
the machine; the Deployment's probes, ports and grace period agree with inferd's config; the
pod's config file starts the real binary; the alert rules and the dashboard are well formed.
(That every metric they name is exported: tests/e2e/deploy.rs.)"""

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import kubernetes_validate
import pytest
import yaml

from conftest import MODEL_REPOSITORY, ROOT, launch, stop

K8S = ROOT / "deploy" / "kubernetes"
S3_OVERLAY = ROOT / "deploy" / "overlays" / "s3-registry"
# The version the manifests are written for: the preStop `sleep` action is stable from 1.34.
KUBERNETES_VERSION = "1.34.0"


def kustomization():
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources():
    """The base's objects, from its files (kustomize's generators aside)."""
    docs = []
    for name in kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def by_kind(docs, kind):
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def validate(doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_every_manifest_validates_against_the_pinned_kubernetes():
    docs = resources()
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "PersistentVolumeClaim", "ServiceAccount",
    }
    for d in docs:
        validate(d)
    # A broken manifest is caught: the check can fail.
    broken = json.loads(json.dumps(by_kind(docs, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_the_kustomize_base_renders_and_validates():
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for d in docs:
        validate(d)
        assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "inferd"
    config = by_kind(docs, "ConfigMap")
    assert config["data"]["inferd.toml"] == (K8S / "inferd.toml").read_text()
    # The Deployment mounts the generated ConfigMap under its hashed name.
    volumes = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": config["metadata"]["name"]} == next(
        v["configMap"] for v in volumes if "configMap" in v
    )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_the_s3_registry_overlay_renders_and_validates():
    import tomllib

    out = subprocess.run(
        ["kubectl", "kustomize", str(S3_OVERLAY)], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for d in docs:
        validate(d)
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    [models] = [v for v in pod["volumes"] if v["name"] == "models"]
    assert "emptyDir" in models and "persistentVolumeClaim" not in models
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount["readOnly"] is False, "the cache must be writable"
    assert {"secretRef": {"name": "inferd-s3"}} in container["envFrom"]
    config = tomllib.loads(by_kind(docs, "ConfigMap")["data"]["inferd.toml"])
    assert config["registry"].startswith("s3://")
    assert config["model_repository"] == mount["mountPath"]
    # Apart from the registry, the overlay's config is the base's.
    base = tomllib.loads((K8S / "inferd.toml").read_text())
    assert {k: v for k, v in config.items() if not k.startswith("registry")} == base


def test_probes_ports_and_shutdown_agree_with_inferds_config():
    import tomllib

    cfg = tomllib.loads((K8S / "inferd.toml").read_text())
    pod = by_kind(resources(), "Deployment")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": cfg["http_port"], "grpc": cfg["grpc_port"], "metrics": cfg["metrics_port"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": cfg["http_port"]}
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": cfg["http_port"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": cfg["http_port"]}
    # The grace period covers the preStop pause and the drain.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg["drain_timeout_secs"]
    # Every file the config names is on a mounted volume.
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for key in ("model_repository", "data_dir", "api_keys", "audit_log"):
        assert any(cfg[key].startswith(m) for m in mounts), (key, cfg[key], mounts)
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The Service speaks gRPC on the gRPC port.
    svc = {p["name"]: p for p in by_kind(resources(), "Service")["spec"]["ports"]}
    assert svc["grpc"]["appProtocol"] == "grpc" and svc["grpc"]["port"] == cfg["grpc_port"]


def test_the_pods_config_file_starts_inferd(tmp_path):
    """inferd.toml as the pod has it; only the paths the pod mounts are pointed elsewhere."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "ops", "sha256": "0" * 64, "scopes": ["admin"]}]}))
    srv = launch(
        MODEL_REPOSITORY,
        tmp_path / "data",
        extra=[
            "--config", str(K8S / "inferd.toml"), "--api-keys", str(keys),
            "--audit-log", str(tmp_path / "audit.jsonl"), "--host", "127.0.0.1",
        ],
        auth=(),
    )
    try:
        # Keys are on (the config names a keys file): a route other than health asks for one.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{srv.http_url}/v2/models/mlp", timeout=5)
        assert e.value.code == 401
    finally:
        stop(srv)


def test_alert_rules_are_well_formed():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    [group] = rules["groups"]
    names = [r["alert"] for r in group["rules"]]
    assert len(names) == len(set(names)) and len(names) >= 8
    for r in group["rules"]:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in {"page", "ticket"}, r
        assert r["annotations"]["summary"], r
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]


def test_the_dashboard_is_well_formed():
    dash = json.loads((ROOT / "deploy" / "grafana" / "inferd.json").read_text())
    assert dash["uid"] == "inferd"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), (p["title"], t["expr"])
            assert t["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "model"}
