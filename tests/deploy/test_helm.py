"""The Helm chart: lints strictly, renders every scenario into manifests that validate against
the Kubernetes schemas and the official prometheus-operator CRDs offline, refuses bad values
readably, carries a config the bridge accepts, and packages with its README."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.crd_schemas import FILES, crd_schema
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ryze-bridge"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.31.0"
RUNBOOK_PLACEHOLDER = "https://ryze-bridge.example/docs/runbook.md"


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
    1.31 schemas (strict: unknown fields refused); monitoring resources against the official
    prometheus-operator CRDs (strict too)."""
    extra = ["-f", str(values)] if values else []
    helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *extra)
    docs = render(*([values] if values else []))
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "ConfigMap", "Service"} <= kinds
    for doc in docs:
        if doc["kind"] in FILES:
            jsonschema.validate(doc, crd_schema(doc["kind"]))
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
        ({"adminToken": {"value": "a", "existingSecret": "s"}}, "/adminToken"),
        ({"sinkCredentials": {"fromExistingSecret": True}}, "'fromExistingSecret' not allowed"),
        ({"instances": {"admin-token": {"token": "x"}}}, "instances.admin-token: the name is"),
        (
            {"serviceMonitor": {"enabled": True}, "config": {"admin": {"tls_cert_file": "/c"}}},
            "serviceMonitor: the admin port serves TLS",
        ),
        ({"persistence": {"size": "lots"}}, "/persistence/size"),
        (
            {"extraEnv": [{"name": "RYZE_BRIDGE__ADMIN__TLS_CERT_FILE", "value": "/c"}]},
            "extraEnv: RYZE_BRIDGE__ADMIN__TLS_CERT_FILE overrides a setting the chart renders",
        ),
        (
            {"extraEnv": [{"name": "RYZE_BRIDGE__SPOOL__DIR", "value": "/data/spool"}]},
            "extraEnv: RYZE_BRIDGE__SPOOL__DIR overrides",
        ),
        (
            {"extraEnv": [{"name": "RYZE_BRIDGE__INSTANCES__X__TOKEN_FILE", "value": "/t"}]},
            "extraEnv: RYZE_BRIDGE__INSTANCES__X__TOKEN_FILE overrides",
        ),
        (
            {"extraVolumes": [{"name": "tokens", "emptyDir": {}}]},
            "extraVolumes: the name tokens is taken by a volume of the chart",
        ),
        (
            {"extraVolumeMounts": [{"name": "x", "mountPath": "/var/lib/ryze-bridge/spool/"}]},
            "extraVolumeMounts: /var/lib/ryze-bridge/spool overlaps the chart's own mount",
        ),
        (
            {"extraVolumeMounts": [{"name": "x", "mountPath": "/etc/ryze-bridge/extra"}]},
            "extraVolumeMounts: /etc/ryze-bridge/extra overlaps the chart's own mount /etc/ryze",
        ),
        (
            {
                "sinkCredentials": {"password": "p", "key": "k"},
                "adminToken": {"value": "a", "key": "k"},
            },
            "the chart's Secret would hold key k twice",
        ),
        (
            {"instances": {"shop": {"token": "t"}}, "adminToken": {"value": "a", "key": "shop"}},
            "would hold key shop twice: shop (instances.shop) and shop (adminToken.key)",
        ),
        (
            {"existingSecret": "s", "discovery": {"enabled": True, "accountToken": "acct"}},
            "discovery.accountToken: an inline account token cannot be combined",
        ),
    ],
    ids=[
        "typo",
        "sink-kind",
        "acks",
        "no-token",
        "instance-typo",
        "inline+existing",
        "replicas",
        "admin-both",
        "old-key",
        "reserved-name",
        "monitor-tls",
        "size",
        "env-admin-tls",
        "env-spool-dir",
        "env-instances",
        "volume-name",
        "mount-spool",
        "mount-under-config",
        "tenant-key-twice",
        "tenant-key-instance",
        "account-token+existing",
    ],
)
def test_bad_values_are_refused_readably(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    """Typos, wrong choices, a missing token, more than one replica without a cluster mode, an
    extraEnv overriding what the chart renders, an extraVolume or mount on the chart's own
    names and paths, a key twice in the chart's Secret and an inline account token beside
    existingSecret fail rendering with a message that points at the value."""
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
    text = (ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.yaml").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    default_base = values["prometheusRule"]["runbookBaseUrl"]
    rules = yaml.safe_load(text.replace(RUNBOOK_PLACEHOLDER, default_base))
    assert by_kind(docs, "PrometheusRule")["spec"] == rules
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "ryze-bridge.json" in d["data"]]
    assert json.loads(dashboards[0]["data"]["ryze-bridge.json"])["uid"] == "ryze-bridge"
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    monitor = by_kind(docs, "ServiceMonitor")
    assert "honorLabels" not in monitor["spec"]["endpoints"][0]  # ryze_instance: no clash


def runbook_urls(docs: list[dict[str, Any]]) -> dict[str, str]:
    groups = by_kind(docs, "PrometheusRule")["spec"]["groups"]
    return {r["alert"]: r["annotations"]["runbook_url"] for g in groups for r in g["rules"]}


def test_alert_runbook_links_follow_the_configured_base() -> None:
    """Every rendered alert links to an absolute runbook URL: by default the documented
    placeholder base (the project publishes no docs site), with
    prometheusRule.runbookBaseUrl (a trailing slash or not) the operator's own page, each
    with the alert's anchor; no placeholder is left behind, NOTES say where the links
    point, and a relative base is refused by the schema."""
    values = CHART / "ci" / "monitoring-values.yaml"
    default = runbook_urls(render(values))
    assert default
    for alert, url in default.items():
        assert url == f"{RUNBOOK_PLACEHOLDER}#{alert.lower()}", url
    base = "prometheusRule.runbookBaseUrl=https://wiki.example.org/ops/ryze/"
    custom = runbook_urls(render(values, sets=(base,)))
    assert custom == {a: f"https://wiki.example.org/ops/ryze#{a.lower()}" for a in default}
    rendered = yaml.safe_dump(render(values, sets=(base,)))  # the operator's base replaced it
    assert RUNBOOK_PLACEHOLDER not in rendered
    notes = render_notes("instances.a.token=t", "prometheusRule.enabled=true", base)
    assert "runbook links point at\nhttps://wiki.example.org/ops/ryze/" in notes
    relative = ("--set", "prometheusRule.runbookBaseUrl=docs/runbook.md")
    refused = helm("template", "rb", str(CHART), *relative, check=False)
    assert refused.returncode != 0
    assert "runbookBaseUrl" in refused.stderr


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
    token; with configReload live no checksum (of the config or the Secret) rolls the pod and
    the bridge watches its file."""
    docs = render(CHART / "ci" / "discovery-values.yaml")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["discovery"]["token_file"] == "/var/run/secrets/ryze-bridge/account-token"
    assert config["discovery"]["include"] == ["loja-*"]
    assert config["reload"]["watch"] is True
    assert "account-token" in by_kind(docs, "Secret")["data"]
    metadata = by_kind(docs, "StatefulSet")["spec"]["template"]["metadata"]
    assert "checksum/config" not in metadata.get("annotations", {})
    assert "checksum/secret" not in metadata.get("annotations", {})
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


def container_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_separate_secrets_per_kind_with_their_own_keys() -> None:
    """Tenant tokens, the sink password and the admin token each come from their own Secret
    under a configurable key, projected into fixed file names the config points at: the tenant
    Secret whole (an instance named after its key needs no mapping), a tokenKey mapped and
    optional, the account token mapped; the chart then creates no Secret of its own."""
    docs = render(
        sets=(
            "existingSecret=tenants",
            "instances.shop.tokenKey=shop-token",
            "instances.other.events={message.exchange}",
            "discovery.enabled=true",
            "discovery.accountTokenKey=acct",
            "sinkCredentials.existingSecret=kafka-user",
            "sinkCredentials.key=password",
            "adminToken.existingSecret=admin",
            "adminToken.key=token",
        )
    )
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert [s["secret"] for s in volume["projected"]["sources"]] == [
        {"name": "tenants"},
        {"name": "tenants", "items": [{"key": "shop-token", "path": "shop"}], "optional": True},
        {"name": "tenants", "items": [{"key": "acct", "path": "account-token"}]},
        {"name": "kafka-user", "items": [{"key": "password", "path": "sink-password"}]},
        {"name": "admin", "items": [{"key": "token", "path": "admin-token"}]},
    ]
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    tokens = "/var/run/secrets/ryze-bridge"
    assert config["instances"]["shop"]["token_file"] == f"{tokens}/shop"
    assert "tokenKey" not in config["instances"]["shop"]
    assert config["discovery"]["token_file"] == f"{tokens}/account-token"
    assert config["sink"]["kafka"]["sasl_password_file"] == f"{tokens}/sink-password"
    assert config["admin"]["token_file"] == f"{tokens}/admin-token"


def test_mixed_inline_and_existing_secrets() -> None:
    """Tenant tokens from the operator's Secret and the admin token inline: the chart's Secret
    holds only the admin token, and the ServiceMonitor sends it from there as a bearer token."""
    docs = render(
        sets=(
            "existingSecret=tenants",
            "instances.shop.events={message.exchange}",
            "adminToken.value=adm-1",
            "serviceMonitor.enabled=true",
        )
    )
    secret = by_kind(docs, "Secret")
    assert set(secret["data"]) == {"admin-token"}
    endpoint = by_kind(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": secret["metadata"]["name"], "key": "admin-token"},
    }
    assert "scheme" not in endpoint
    assert "adm-1" not in yaml.safe_dump(by_kind(docs, "ServiceMonitor"))


def test_admin_tls_switches_probes_and_scrapes_to_https() -> None:
    """With config.admin.tls_cert_file the three probes use HTTPS and the ServiceMonitor
    scrapes over HTTPS trusting tlsSecret's ca.crt for the Service's name (or the tlsConfig
    given); without it the probes use the default scheme (HTTP). Both validate against the
    official CRD."""
    tls = (
        "tlsSecret=bridge-tls",
        "config.admin.tls_cert_file=/etc/ryze-bridge/tls/tls.crt",
        "config.admin.tls_key_file=/etc/ryze-bridge/tls/tls.key",
        "adminToken.existingSecret=admin",
        "serviceMonitor.enabled=true",
    )
    docs = render(sets=tls)
    container = container_of(docs)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    monitor = by_kind(docs, "ServiceMonitor")
    jsonschema.validate(monitor, crd_schema("ServiceMonitor"))
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "bridge-tls", "key": "ca.crt"}},
        "serverName": "rb-ryze-bridge.bridge.svc",
    }
    assert endpoint["authorization"]["credentials"] == {"name": "admin", "key": "admin-token"}
    own = by_kind(
        render(sets=(*tls, "serviceMonitor.tlsConfig.insecureSkipVerify=true")), "ServiceMonitor"
    )
    assert own["spec"]["endpoints"][0]["tlsConfig"] == {"insecureSkipVerify": True}
    plain = container_of(render(sets=("instances.shop.token=t-1",)))
    assert "scheme" not in plain["livenessProbe"]["httpGet"]
    assert plain["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_pod_extras_reach_the_pod() -> None:
    """extraEnv, extraVolumes, extraVolumeMounts, topologySpreadConstraints (a labelSelector
    filled in when missing), priorityClassName and podAnnotations land in the pod spec, and
    the result validates against the Kubernetes schema."""
    values = {
        "instances": {"shop": {"token": "t-1"}},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway"},
        ],
        "priorityClassName": "bridge-critical",
        "podAnnotations": {"example.com/team": "integrations"},
    }  # fmt: skip
    docs = render_values(values)
    sts = by_kind(docs, "StatefulSet")
    kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)
    template = sts["spec"]["template"]
    pod = template["spec"]
    container = pod["containers"][0]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True} in container[
        "volumeMounts"
    ]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert pod["priorityClassName"] == "bridge-critical"
    assert template["metadata"]["annotations"]["example.com/team"] == "integrations"


def render_values(values: dict[str, Any]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="ryze-chart-") as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        return render(path)


def test_schema_covers_every_value() -> None:
    """values.schema.json describes every key of values.yaml, nested ones included (the schema
    refuses unknown keys, so a value it lacks could not even be set)."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    free = {"config", "podSecurityContext", "securityContext", "resources", "affinity"}
    free |= {"startupProbe", "livenessProbe", "readinessProbe", "tlsConfig", "instances"}

    def missing(node: dict[str, Any], props: dict[str, Any], where: str) -> list[str]:
        out = []
        for key, value in node.items():
            if key not in props:
                out.append(f"{where}{key}")
            elif isinstance(value, dict) and key not in free and "properties" in props[key]:
                out += missing(value, props[key]["properties"], f"{where}{key}.")
        return out

    assert missing(values, schema["properties"], "") == []
    jsonschema.validate(values, schema)


def test_helm_package_carries_the_readme(tmp_path: Path) -> None:
    """`helm package` makes the chart archive, named after the chart's version, with its
    README, schema, values and templates inside."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    archive = tmp_path / f"ryze-bridge-{chart['version']}.tgz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        readme = tar.extractfile("ryze-bridge/README.md")
        assert readme is not None
        assert readme.read() == (CHART / "README.md").read_bytes()
    assert {
        "ryze-bridge/Chart.yaml",
        "ryze-bridge/values.yaml",
        "ryze-bridge/values.schema.json",
        "ryze-bridge/templates/statefulset.yaml",
        "ryze-bridge/files/ryze-bridge-rules.yaml",
    } <= names
    assert not [n for n in names if "/ci/" in n]


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("ServiceMonitor", ("spec", "endpoints", 0), {"bearerToken": "x"}),
        ("ServiceMonitor", ("spec", "endpoints", 0), {"scheme": "gopher"}),
        ("PrometheusRule", ("spec", "groups", 0), {"interval": "often"}),
    ],
    ids=["unknown-field", "bad-enum", "bad-duration"],
)
def test_official_crds_refuse_what_the_server_would(
    kind: str, path: tuple[str | int, ...], bad: dict[str, Any]
) -> None:
    """The official CRDs' schemas, as the tests use them, refuse an unknown field (the server
    would prune it silently), a scheme outside the enum and a malformed duration in the
    chart's own rendered resources."""
    doc = by_kind(render(CHART / "ci" / "monitoring-values.yaml"), kind)
    jsonschema.validate(doc, crd_schema(kind))
    node: Any = doc
    for step in path:
        node = node[step]
    node.update(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema(kind))


def pod_template(*sets: str) -> dict[str, Any]:
    template: dict[str, Any] = by_kind(render(sets=sets), "StatefulSet")["spec"]["template"]
    return template


@pytest.mark.parametrize(
    "tokens",
    [("existingSecret=tenants",), ("instances.a.token=t-a", "instances.b.token=t-b")],
    ids=["existing-secret", "inline"],
)
def test_live_reload_keeps_the_pod_template_when_instances_change(tokens: tuple[str, ...]) -> None:
    """With configReload live, adding or removing an instance changes the ConfigMap only: the
    pod template (volumes, annotations) stays byte for byte the same, so no pod rolls and a key
    not yet in the tenant Secret cannot keep a new pod from starting; the tenant Secret is
    projected whole, without items."""
    base = ("configReload=live", "adminToken.existingSecret=admin", *tokens)
    one = pod_template(*base, "instances.a.events={message.exchange}")
    two = pod_template(
        *base, "instances.a.events={message.exchange}", "instances.b.events={message.status}"
    )
    assert one == two
    volume = next(v for v in two["spec"]["volumes"] if v["name"] == "tokens")
    tenants = volume["projected"]["sources"][0]["secret"]
    assert "items" not in tenants
    rollout = pod_template(*base[1:], "instances.a.events={message.exchange}")
    assert rollout != pod_template(*base[1:], "instances.b.events={message.status}",
                                   "instances.a.events={message.exchange}")  # fmt: skip


def test_allowed_extras_still_render() -> None:
    """The guards refuse only the chart's own settings, names and paths: other RYZE_BRIDGE__
    variables, a volume and a mount beside the chart's (/etc/corp-ca, /var/lib/other) and
    distinct keys in the chart's Secret render."""
    values = {
        "instances": {"shop": {"token": "t-1"}},
        "sinkCredentials": {"password": "p"},
        "adminToken": {"value": "a"},
        "extraEnv": [{"name": "RYZE_BRIDGE__LOG__LEVEL", "value": "debug"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [
            {"name": "ca", "mountPath": "/etc/corp-ca"},
            {"name": "ca", "mountPath": "/var/lib/ryze-bridge-other"},
        ],
    }
    docs = render_values(values)
    assert set(by_kind(docs, "Secret")["data"]) == {"shop", "sink-password", "admin-token"}


def render_notes(*sets: str) -> str:
    """NOTES.txt rendered offline: helm template leaves it out, so a copy of the chart carries
    it as a named template that a small manifest includes."""
    with tempfile.TemporaryDirectory(prefix="ryze-chart-") as tmp:
        chart = Path(tmp) / "ryze-bridge"
        shutil.copytree(CHART, chart)
        notes = chart / "templates" / "NOTES.txt"
        (chart / "templates" / "_notes.tpl").write_text(
            '{{- define "test.notes" -}}' + notes.read_text(encoding="utf-8") + "{{- end }}",
            encoding="utf-8",
        )
        notes.unlink()
        (chart / "templates" / "notes.yaml").write_text(
            'notes: {{ include "test.notes" . | toJson }}\n', encoding="utf-8"
        )
        args = ["template", "rb", str(chart), "--namespace", "bridge"]
        args += ["--kube-version", KUBE_VERSION, "-s", "templates/notes.yaml"]
        for item in sets:
            args += ["--set", item]
        text: str = yaml.safe_load(helm(*args).stdout)["notes"]
        return text


def test_notes_say_how_to_get_the_admin_token_and_warn_about_cleartext() -> None:
    """With an admin token, NOTES shows the command that reads it from its Secret; without
    TLS and with a ServiceMonitor they say the bearer token crosses the network in cleartext;
    an inline admin token is flagged as sharing the tenant tokens' Secret. With TLS from a
    tlsSecret, curl trusts its CA instead of -k."""
    notes = render_notes(
        "instances.a.token=t", "adminToken.value=adm-1", "serviceMonitor.enabled=true"
    )
    assert "adm-1" not in notes
    assert "kubectl -n bridge get secret rb-ryze-bridge-tokens" in notes
    assert "jsonpath='{.data.admin-token}'" in notes
    assert "cleartext" in notes
    assert "adminToken.existingSecret" in notes
    tls = render_notes(
        "existingSecret=tenants",
        "adminToken.existingSecret=admin",
        "tlsSecret=bridge-tls",
        "config.admin.tls_cert_file=/etc/ryze-bridge/tls/tls.crt",
        "config.admin.tls_key_file=/etc/ryze-bridge/tls/tls.key",
        "serviceMonitor.enabled=true",
    )
    assert "cleartext" not in tls
    assert "-k " not in tls
    assert "--cacert" in tls
    assert "kubectl -n bridge get secret admin" in tls


def test_readme_says_which_secrets_need_a_restart() -> None:
    """The chart README and docs/security.md say that tenant tokens and the sink password are
    re-read, while the admin token and the admin TLS certificate need a restart (a rollout
    restart or a reloader annotation through podAnnotations)."""
    for path in (CHART / "README.md", ROOT / "docs" / "security.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert "kubectl rollout restart statefulset" in text, path
        assert "read once at start" in text.lower(), path
        assert "podAnnotations" in text, path


def test_sizing_table_cites_published_numbers() -> None:
    """Every measured number in the chart README's sizing table appears in docs/benchmark.md
    (not in unpublished result files), and where an RSS is published the suggested memory
    request is at least that RSS and the limit at least twice it."""
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    bench = (ROOT / "docs" / "benchmark.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Sizing") : readme.index("## Several replicas")]
    assert 'README "Latest results"' not in section
    assert "docs/benchmark.md" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 2
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        measured = " ".join(cells[1:4])
        for number in re.findall(r"\d[\d,.]*\d|\d", measured):
            assert number in bench, (number, row)
        sizes = [int(n) * (1024 if unit == "Gi" else 1)
                 for n, unit in re.findall(r"`(\d+)(Mi|Gi)`", cells[4])]  # fmt: skip
        if "being measured" in row:
            continue
        assert len(sizes) == 2, row
        request, limit = sizes
        assert limit >= request, row
        for rss in (int(n) for n in re.findall(r"(\d+) MB", cells[2])):
            assert request >= rss, row
            assert limit >= 2 * rss, row


def test_packaged_readme_names_only_what_the_archive_holds() -> None:
    """The ci/ scenarios are left out of the packaged chart, so its README names them by
    their place in the project's repository (helm/ryze-bridge/ci/...), never as a bare ci/
    path that the archive would not hold."""
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert "ci/" in (CHART / ".helmignore").read_text(encoding="utf-8").split()
    bare = [m.start() for m in re.finditer(r"(?<![\w/])ci/", readme)]
    assert bare == [], [readme[i - 40 : i + 40] for i in bare]
