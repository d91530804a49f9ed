"""The Helm chart: lints strictly, renders every scenario into manifests that validate against
the Kubernetes schemas offline, refuses bad values readably, and carries a config the bridge
accepts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.crd_schemas import PROMETHEUS_RULE, SERVICE_MONITOR
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ryze-bridge"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.31.0"
CRDS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


def helm_binary() -> str:
    cached = Path(os.environ.get("RYZE_CACHE_DIR", Path.home() / ".cache" / "ryze-bridge"))
    for candidate in (shutil.which("helm"), str(cached / "bin" / "helm")):
        if candidate and Path(candidate).exists():
            return candidate
    unavailable("helm is not installed; scripts/tools.sh builds it")
    return ""


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(*values: Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", "rb", str(CHART), "--namespace", "bridge", "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


@pytest.mark.parametrize(
    "values", [None, *SCENARIOS], ids=["default", *(s.stem for s in SCENARIOS)]
)
def test_lint_strict_and_manifests_validate(values: Path | None) -> None:
    """helm lint --strict passes and every rendered manifest validates against the Kubernetes
    1.31 schemas (strict: unknown fields refused); monitoring resources against their CRDs."""
    extra = ["-f", str(values)] if values else []
    helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *extra)
    docs = render(*([values] if values else []))
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "ConfigMap", "Service"} <= kinds
    for doc in docs:
        if doc["kind"] in CRDS:
            jsonschema.validate(doc, CRDS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_statefulset_is_safe_by_default() -> None:
    """One replica, the spool on a volumeClaimTemplate, probes on /healthz and /readyz, a grace
    period that covers the drain, and a locked-down security context."""
    sts = by_kind(render(sets=("instances.shop.token=t-123",)), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spool"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(sts["spec"]["selector"]["matchLabels"]) == {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
    }


def test_emptydir_scenario_has_no_claim() -> None:
    """persistence.enabled false puts the spool on an emptyDir and claims no volume."""
    sts = by_kind(render(CHART / "ci" / "emptydir-values.yaml"), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["spool"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"instancez": {}}, "additional properties 'instancez' not allowed"),
        ({"config": {"sink": {"kind": "mongo"}}}, "/config/sink/kind"),
        ({"config": {"sink": {"kafka": {"acks": "sometimes"}}}}, "/config/sink/kafka/acks"),
        ({"instances": {"shop": {"events": []}}}, "missing property 'token'"),
        ({"instances": {"shop": {"tokn": "x"}}}, "additional properties 'tokn' not allowed"),
        ({"existingSecret": "s", "instances": {"shop": {"token": "x"}}}, "/instances/shop"),
        ({"replicaCount": 2}, "replicaCount above 1 needs config.cluster.mode"),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
    ],
    ids=[
        "typo",
        "sink-kind",
        "acks",
        "no-token",
        "instance-typo",
        "inline+existing",
        "replicas",
        "size",
    ],
)
def test_bad_values_are_refused_readably(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    """Typos, wrong choices, a missing token and more than one replica without a cluster mode
    fail rendering with a message that points at the value."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    result = helm(
        "template", "rb", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(path), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=[s.stem for s in SCENARIOS])
def test_rendered_config_is_accepted_by_check_config(values: Path, tmp_path: Path) -> None:
    """The config.yaml a rendered ConfigMap carries passes `ryze-bridge check-config`."""
    config = by_kind(render(values), "ConfigMap")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tok-ci-" not in result.stdout


def test_chart_schema_is_generated_from_the_settings() -> None:
    """values.schema.json is exactly what scripts/gen_chart_schema.py derives from the
    pydantic settings, so the chart cannot drift from what the bridge accepts."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_chart_schema.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_checksum_follows_the_config_only() -> None:
    """Changing the config changes the pod's config checksum; re-rendering or changing an
    unrelated value (resources) does not."""

    def checksum(*sets: str) -> str:
        sts = by_kind(render(sets=("instances.shop.token=t-1", *sets)), "StatefulSet")
        value: str = sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum()
    assert checksum() == base
    assert checksum("resources.requests.cpu=200m") == base
    assert checksum("config.log.level=debug") != base
    assert checksum("instances.shop.media_base64=true") != base


def test_monitoring_resources_ship_the_repository_files() -> None:
    """The PrometheusRule and the dashboard ConfigMap carry deploy/prometheus and
    deploy/grafana unchanged (the chart's files/ are copies kept equal)."""
    for name, original in (
        ("ryze-bridge.json", ROOT / "deploy" / "grafana" / "ryze-bridge.json"),
        ("ryze-bridge-rules.yaml", ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.yaml"),
    ):
        assert (CHART / "files" / name).read_bytes() == original.read_bytes()
    docs = render(CHART / "ci" / "monitoring-values.yaml")
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.yaml").read_text())
    assert by_kind(docs, "PrometheusRule")["spec"] == rules
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "ryze-bridge.json" in d["data"]]
    assert json.loads(dashboards[0]["data"]["ryze-bridge.json"])["uid"] == "ryze-bridge"
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    monitor = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_tokens_are_in_the_secret_not_the_configmap() -> None:
    """Inline tokens land base64-encoded in the chart's Secret, mounted as files; the
    ConfigMap only names the files."""
    docs = render(CHART / "ci" / "kafka-values.yaml")
    configmap = yaml.safe_dump(by_kind(docs, "ConfigMap"))
    assert "tok-ci-" not in configmap
    assert "token_file: /var/run/secrets/ryze-bridge/loja-centro" in configmap
    assert set(by_kind(docs, "Secret")["data"]) == {"loja-centro", "suporte"}


def test_discovery_and_live_reload() -> None:
    """With discovery the config lists the account's instances through a mounted account
    token; with configReload live no checksum rolls the pod and the bridge watches its file."""
    docs = render(CHART / "ci" / "discovery-values.yaml")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["discovery"]["token_file"] == "/var/run/secrets/ryze-bridge/account-token"
    assert config["discovery"]["include"] == ["loja-*"]
    assert config["reload"]["watch"] is True
    assert "account-token" in by_kind(docs, "Secret")["data"]
    annotations = by_kind(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" not in annotations
    rollout = yaml.safe_load(
        by_kind(render(CHART / "ci" / "kafka-values.yaml"), "ConfigMap")["data"]["config.yaml"]
    )
    assert rollout["reload"]["watch"] is False


def test_secure_scenario_wires_secrets_and_certificates() -> None:
    """Passwords and the admin token go to the Secret and are referenced as files; a TLS
    Secret is mounted for the CA and certificates; none of them appears in the ConfigMap."""
    docs = render(CHART / "ci" / "secure-values.yaml")
    configmap = by_kind(docs, "ConfigMap")["data"]["config.yaml"]
    config = yaml.safe_load(configmap)
    kafka = config["sink"]["kafka"]
    assert kafka["sasl_password_file"] == "/var/run/secrets/ryze-bridge/sink-password"
    assert kafka["security_protocol"] == "SASL_SSL"
    assert config["admin"]["token_file"] == "/var/run/secrets/ryze-bridge/admin-token"
    assert "ci-sasl-password" not in configmap
    assert "ci-admin-token" not in configmap
    assert {"sink-password", "admin-token"} <= set(by_kind(docs, "Secret")["data"])
    pod = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["tls"] == "/etc/ryze-bridge/tls"
    assert any(v.get("secret", {}).get("secretName") == "ryze-bridge-tls" for v in pod["volumes"])


def test_cluster_modes_lift_the_replica_guard_and_spread_the_pods() -> None:
    """With a cluster mode, several replicas render: they start in parallel, know their pod
    name, prefer different nodes and keep a PodDisruptionBudget of one; static mode gets its
    replica count from replicaCount. Without one, a single replica starts in order."""
    docs = render(CHART / "ci" / "cluster-kafka-values.yaml")
    sts = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert by_kind(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    static = by_kind(render(CHART / "ci" / "cluster-static-values.yaml"), "ConfigMap")
    cluster = yaml.safe_load(static["data"]["config.yaml"])["cluster"]
    assert cluster == {"mode": "static", "count": 2}
    single = by_kind(render(sets=("instances.shop.token=t-1",)), "StatefulSet")
    assert single["spec"]["podManagementPolicy"] == "OrderedReady"
    assert "affinity" not in single["spec"]["template"]["spec"]
