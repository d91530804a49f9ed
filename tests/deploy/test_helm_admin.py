"""The chart's admin port is secure by default: it listens on the pod's IP (downward API),
always behind a token (generated and kept by the chart, or given), the ServiceMonitor sends
that token (and TLS settings with admin TLS), the probes follow admin TLS, and a NetworkPolicy
admits the admin port only from the documented scraper selector."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import yaml

from tests.deploy.test_helm import CHART, KUBE_VERSION, by_kind, helm, render, render_notes

TOKEN_SETS = ("instances.shop.token=t-123",)
TLS_SETS = (
    "tlsSecret=bridge-tls",
    "config.admin.tls_cert_file=/etc/ryze-bridge/tls/tls.crt",
    "config.admin.tls_key_file=/etc/ryze-bridge/tls/tls.key",
)


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def bridge_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(by_kind(docs, "ConfigMap")["data"]["config.yaml"])
    return config


def test_admin_listens_on_the_pod_ip_with_a_generated_token() -> None:
    """By default the admin host comes from status.podIP (the config names none, so nothing
    else can widen it) and the chart generates a 48-character token in Secret
    <fullname>-admin, mounted as the admin token file."""
    docs = render(sets=TOKEN_SETS)
    env = {e["name"]: e for e in bridge_container(docs)["env"]}
    assert env["RYZE_BRIDGE__ADMIN__HOST"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "status.podIP"}
    }
    admin = rendered_config(docs)["admin"]
    assert "host" not in admin
    assert admin["token_file"] == "/var/run/secrets/ryze-bridge/admin-token"
    secret = named(docs, "Secret", "rb-ryze-bridge-admin")
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert len(token) == 48
    assert token.isalnum()
    sources = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    projected = next(v for v in sources if v["name"] == "tokens")["projected"]["sources"]
    assert {
        "secret": {
            "name": "rb-ryze-bridge-admin",
            "items": [{"key": "admin-token", "path": "admin-token"}],
        }
    } in projected


def test_a_given_token_replaces_the_generated_one() -> None:
    """adminToken.existingSecret (or value) is used instead; no admin Secret is generated."""
    docs = render(sets=(*TOKEN_SETS, "adminToken.existingSecret=ops-admin"))
    assert not [d for d in docs if d["metadata"]["name"] == "rb-ryze-bridge-admin"]
    monitor = render(
        sets=(*TOKEN_SETS, "adminToken.existingSecret=ops-admin", "serviceMonitor.enabled=true")
    )
    endpoint = by_kind(monitor, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"]["name"] == "ops-admin"


def test_no_token_at_all_is_refused() -> None:
    """adminToken.generate false with neither value nor existingSecret fails rendering with a
    message naming the values to set: the admin port never runs without a token."""
    args = ["template", "rb", str(CHART), "--kube-version", KUBE_VERSION]
    result = helm(*args, "--set", TOKEN_SETS[0], "--set", "adminToken.generate=false", check=False)
    assert result.returncode != 0
    assert "adminToken: give value or existingSecret, or set generate: true" in result.stderr


def test_service_monitor_sends_the_token_and_tls_settings() -> None:
    """The ServiceMonitor authorizes with the generated token's Secret; with admin TLS it
    scrapes over HTTPS trusting tlsSecret's ca.crt for the Service's name, and every probe's
    scheme is HTTPS (plain HTTP without TLS)."""
    plain = render(sets=(*TOKEN_SETS, "serviceMonitor.enabled=true"))
    endpoint = by_kind(plain, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "rb-ryze-bridge-admin", "key": "admin-token"},
    }
    assert "scheme" not in endpoint
    container = bridge_container(plain)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"
    tls = render(sets=(*TOKEN_SETS, *TLS_SETS, "serviceMonitor.enabled=true"))
    endpoint = by_kind(tls, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "bridge-tls", "key": "ca.crt"}},
        "serverName": "rb-ryze-bridge.bridge.svc",
    }
    assert endpoint["authorization"]["credentials"]["name"] == "rb-ryze-bridge-admin"
    container = bridge_container(tls)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["path"] in ("/healthz", "/readyz")


def test_network_policy_is_on_and_admits_only_the_scraper_and_the_release() -> None:
    """The NetworkPolicy is rendered by default: ingress only to the admin port, only from
    Prometheus pods (app.kubernetes.io/name: prometheus, kube-prometheus-stack's) in any
    namespace and from the release's own pods (so one replica can ask the others, `status
    --replicas`); extra peers are added beside them, never replacing them; egress stays
    unrestricted."""
    docs = render(sets=TOKEN_SETS)
    policy = by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    pod_labels = by_kind(docs, "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert pod_labels == spec["podSelector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    assert len(spec["ingress"]) == 1
    rule = spec["ingress"][0]
    assert rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        {"podSelector": {"matchLabels": pod_labels}},
    ]
    extra = render(
        sets=(
            *TOKEN_SETS,
            "networkPolicy.scraper.namespaceSelector.matchLabels.team=obs",
            "networkPolicy.ingressFrom[0].ipBlock.cidr=192.0.2.0/24",
        )
    )
    peers = by_kind(extra, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"] == {"matchLabels": {"team": "obs"}}
    assert peers[2] == {"ipBlock": {"cidr": "192.0.2.0/24"}}
    off = render(sets=(*TOKEN_SETS, "networkPolicy.enabled=false"))
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


def test_a_network_policy_without_a_scraper_is_refused() -> None:
    """With both scraper selectors null the chart refuses to render, instead of a policy
    that admits nobody (or, as before, everybody)."""
    result = helm(
        "template", "rb", str(CHART), "--kube-version", KUBE_VERSION, "--set", TOKEN_SETS[0],
        "--set", "networkPolicy.scraper.namespaceSelector=null",
        "--set", "networkPolicy.scraper.podSelector=null", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "networkPolicy.scraper" in result.stderr


def test_notes_show_a_cluster_status_that_the_policy_admits() -> None:
    """In a cluster mode NOTES show `ryze-bridge status --replicas` run inside a pod with the
    mounted admin token and the pods' IPs (not a port-forward, which cannot reach an admin
    port bound to the pod IP), and say the NetworkPolicy admits the release's pods."""
    notes = render_notes("instances.a.token=t", "config.cluster.mode=static", "replicaCount=2")
    flat = " ".join(notes.split())
    assert "kubectl -n bridge exec rb-ryze-bridge-0 -- sh -c" in flat
    assert "ADMIN_TOKEN=$(cat /var/run/secrets/ryze-bridge/admin-token)" in flat
    assert "status --token-env ADMIN_TOKEN --replicas http://<pod-ip-0>:9464," in flat
    assert "admits the release's own pods" in flat
    assert "--replicas" not in render_notes("instances.a.token=t")


def test_pods_roll_when_the_generated_admin_token_changes() -> None:
    """With a generated admin token the pod template carries checksum/admin-token, the hash of
    the very token in Secret <fullname>-admin of the same render; a render without a cluster
    (`helm template`, GitOps) draws a new token and so a new checksum (the pods roll onto it,
    instead of disagreeing with the ServiceMonitor until a restart); a given token has none."""
    renders = [render(sets=TOKEN_SETS) for _ in range(2)]
    sums = []
    for docs in renders:
        annotations = by_kind(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
        token = named(docs, "Secret", "rb-ryze-bridge-admin")["data"]["admin-token"]
        assert annotations["checksum/admin-token"] == hashlib.sha256(token.encode()).hexdigest()
        sums.append(annotations["checksum/admin-token"])
    assert sums[0] != sums[1]
    given = render(sets=(*TOKEN_SETS, "adminToken.existingSecret=admin"))
    template = by_kind(given, "StatefulSet")["spec"]["template"]["metadata"]
    assert "checksum/admin-token" not in template.get("annotations", {})
