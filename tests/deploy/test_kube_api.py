"""The chart against a real Kubernetes API server (etcd + kube-apiserver built from their Go
modules, the official prometheus-operator CRDs applied): install, upgrade with monitoring on,
rollback and uninstall of the defaults, and every ci/ values file as a server-side dry run.
No kubelet: objects are validated, admitted and stored; pods never run.

scripts/test.sh runs this file in a pytest run of its own after the main suite, once its background
build of the binaries has succeeded; the main run does not collect it (--ignore). Without the
binaries it skips, or fails under CI=true / BRIDGE_REQUIRE_SERVICES=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.crd_schemas import crd_files
from tests.deploy.kube_api import KubeAPI, start_kube_api
from tests.deploy.test_helm import CHART, SCENARIOS, helm_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
NAMESPACE = "bridge"
KUBE_VERSION = "v1.37.2"  # scripts/kube-tools.sh's default


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeAPI]:
    files = crd_files()
    api = start_kube_api()
    try:
        for path in files.values():
            api.apply_crd(yaml.safe_load(path.read_text(encoding="utf-8")))
        yield api
    finally:
        api.stop()


def kube_helm(api: KubeAPI, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm against the test API server, its caches and config inside the server's directory."""
    home = api.work / "home"
    env = {
        **os.environ,
        "KUBECONFIG": str(api.kubeconfig),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def stored(api: KubeAPI, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object as the API server stores it, or None when it does not exist."""
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
    status, body = api.get(obj, NAMESPACE)
    if status == 404:
        return None
    assert status == 200, body
    return body


def revision(api: KubeAPI) -> int:
    status = json.loads(kube_helm(api, "status", "rb", "-n", NAMESPACE, "-o", "json").stdout)
    number: int = status["version"]
    return number


def test_server_reports_the_stamped_version(kube: KubeAPI) -> None:
    """The source-built API server reports a real version (stamped at build time), so the
    chart's kubeVersion constraint is checked against it and a chart asking for a newer
    Kubernetes is refused."""
    status, version = kube.request("GET", "/version")
    assert status == 200
    assert version["gitVersion"] == KUBE_VERSION
    newer = kube.work / "newer-chart"
    shutil.copytree(CHART, newer)
    meta = yaml.safe_load((newer / "Chart.yaml").read_text(encoding="utf-8"))
    meta["kubeVersion"] = ">=1.99.0-0"
    (newer / "Chart.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    result = kube_helm(kube, "install", "newer", str(newer), "--dry-run=server", check=False)
    assert result.returncode != 0
    assert f"incompatible with Kubernetes {KUBE_VERSION}" in result.stderr


def test_install_upgrade_rollback_uninstall(kube: KubeAPI) -> None:
    """The defaults install (StatefulSet, Service, ConfigMap, PDB stored); an upgrade turning
    monitoring on stores a ServiceMonitor that keeps its bearer-token authorization through
    the CRD's pruning and a PrometheusRule with the alert groups; a rollback to revision 1
    removes both; uninstall removes everything and the release."""
    kube_helm(kube, "install", "rb", str(CHART), "-n", NAMESPACE, "--create-namespace")
    sts = stored(kube, "apps/v1", "StatefulSet", "rb-ryze-bridge")
    assert sts is not None
    assert sts["spec"]["replicas"] == 1
    assert stored(kube, "v1", "Service", "rb-ryze-bridge") is not None
    assert stored(kube, "policy/v1", "PodDisruptionBudget", "rb-ryze-bridge") is not None
    assert stored(kube, "monitoring.coreos.com/v1", "ServiceMonitor", "rb-ryze-bridge") is None

    kube_helm(
        kube, "upgrade", "rb", str(CHART), "-n", NAMESPACE,
        "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
        "--set", "adminToken.value=ci-admin-token",
    )  # fmt: skip
    assert revision(kube) == 2
    monitor = stored(kube, "monitoring.coreos.com/v1", "ServiceMonitor", "rb-ryze-bridge")
    assert monitor is not None
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == {
        "name": "rb-ryze-bridge-tokens",
        "key": "admin-token",
    }
    assert "honorLabels" not in endpoint  # the RyzeAPI instance is ryze_instance: no clash
    rule = stored(kube, "monitoring.coreos.com/v1", "PrometheusRule", "rb-ryze-bridge")
    assert rule is not None
    rules = yaml.safe_load((CHART / "files" / "ryze-bridge-rules.yaml").read_text())
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in rules["groups"]]

    kube_helm(kube, "rollback", "rb", "1", "-n", NAMESPACE)
    assert revision(kube) == 3
    assert stored(kube, "monitoring.coreos.com/v1", "ServiceMonitor", "rb-ryze-bridge") is None
    assert stored(kube, "monitoring.coreos.com/v1", "PrometheusRule", "rb-ryze-bridge") is None
    assert stored(kube, "apps/v1", "StatefulSet", "rb-ryze-bridge") is not None

    kube_helm(kube, "uninstall", "rb", "-n", NAMESPACE)
    assert stored(kube, "apps/v1", "StatefulSet", "rb-ryze-bridge") is None
    assert stored(kube, "v1", "ConfigMap", "rb-ryze-bridge") is None
    listing = json.loads(kube_helm(kube, "list", "-n", NAMESPACE, "-a", "-o", "json").stdout)
    assert listing == []


@pytest.mark.parametrize("values", SCENARIOS, ids=[s.stem for s in SCENARIOS])
def test_ci_values_install_as_server_dry_run(kube: KubeAPI, values: Path) -> None:
    """`helm install --dry-run=server` of each ci/ values file passes against the API server,
    and every object of its manifest passes the server's own dry-run create with strict field
    validation (admission, schemas and the CRDs' structural schemas; unknown fields refused)."""
    result = kube_helm(
        kube, "install", f"dry-{values.stem}"[:53], str(CHART), "-n", "default",
        "--dry-run=server", "-f", str(values), "-o", "json",
    )  # fmt: skip
    release = json.loads(result.stdout)
    docs = [d for d in yaml.safe_load_all(release["manifest"]) if d]
    assert {"StatefulSet", "ConfigMap", "Service"} <= {d["kind"] for d in docs}
    for doc in docs:
        status, body = kube.dry_run_create(doc, "default")
        assert status == 201, f"{doc['kind']} {doc['metadata']['name']}: {body}"
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"]
    assert stored_in_default(kube, names[0]) is None  # a dry run stores nothing


def stored_in_default(api: KubeAPI, name: str) -> dict[str, Any] | None:
    obj = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}}
    status, body = api.get(obj, "default")
    return None if status == 404 else body


def test_server_dry_run_refuses_unknown_fields(kube: KubeAPI) -> None:
    """The strict server-side dry run the scenarios go through does refuse what the CRD does
    not know (a field the server would otherwise prune silently) and a value its schema
    forbids, so a wrong ServiceMonitor cannot pass it."""
    manifest = kube_helm(
        kube, "template", "rb", str(CHART), "-n", "default", "--set", "serviceMonitor.enabled=true",
        "--set", "adminToken.value=t", "--show-only", "templates/servicemonitor.yaml", "--validate",
    ).stdout  # fmt: skip
    monitor = yaml.safe_load(manifest)
    status, body = kube.dry_run_create(monitor, "default")
    assert status == 201, body
    monitor["spec"]["endpoints"][0]["bearerTokn"] = "x"
    status, body = kube.dry_run_create(monitor, "default")
    assert status >= 400
    assert "bearerTokn" in body["message"]
    del monitor["spec"]["endpoints"][0]["bearerTokn"]
    monitor["spec"]["endpoints"][0]["scheme"] = "gopher"
    status, body = kube.dry_run_create(monitor, "default")
    assert status == 422, body


def test_generated_admin_token_is_kept_and_sent_by_the_service_monitor(kube: KubeAPI) -> None:
    """Installed with the defaults, the chart stores a generated admin token Secret and a
    NetworkPolicy admitting only the scraper and the release's own pods to the admin port; an
    upgrade turning the ServiceMonitor on keeps the same token (read back from the server with
    lookup) and the stored ServiceMonitor authorizes with it; the pod's admin host is its IP
    (downward API)."""
    kube_helm(kube, "install", "adm", str(CHART), "-n", NAMESPACE, "--create-namespace")
    secret = stored(kube, "v1", "Secret", "adm-ryze-bridge-admin")
    assert secret is not None
    token = secret["data"]["admin-token"]
    assert len(token) >= 64  # base64 of 48 characters
    policy = stored(kube, "networking.k8s.io/v1", "NetworkPolicy", "adm-ryze-bridge")
    assert policy is not None
    peers = policy["spec"]["ingress"][0]["from"]
    scraper = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    release = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/instance": "adm",
                "app.kubernetes.io/name": "ryze-bridge",
            }
        }
    }
    assert len(peers) == 2
    assert scraper in peers
    assert release in peers  # the replicas ask each other (status --replicas)
    sts = stored(kube, "apps/v1", "StatefulSet", "adm-ryze-bridge")
    assert sts is not None
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RYZE_BRIDGE__ADMIN__HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"

    kube_helm(
        kube, "upgrade", "adm", str(CHART), "-n", NAMESPACE, "--set", "serviceMonitor.enabled=true"
    )
    kept = stored(kube, "v1", "Secret", "adm-ryze-bridge-admin")
    assert kept is not None
    assert kept["data"]["admin-token"] == token
    monitor = stored(kube, "monitoring.coreos.com/v1", "ServiceMonitor", "adm-ryze-bridge")
    assert monitor is not None
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "adm-ryze-bridge-admin",
        "key": "admin-token",
    }
    kube_helm(kube, "uninstall", "adm", "-n", NAMESPACE)
    assert stored(kube, "v1", "Secret", "adm-ryze-bridge-admin") is None
