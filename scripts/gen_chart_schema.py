"""Write helm/ryze-bridge/values.schema.json; its `config` and `instances` come from the
pydantic settings, so the chart cannot drift from what the bridge accepts.

    python3 -m uv run python scripts/gen_chart_schema.py          # write
    python3 -m uv run python scripts/gen_chart_schema.py --check  # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge.settings import EVENT_NAMES, INSTANCE_NAME_PATTERN, InstanceSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "helm" / "ryze-bridge" / "values.schema.json"
# set by the chart, not by values.config
CHART_OWNED = {"instances", "shutdown_timeout", "discovery", "reload"}


def closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `config` value's schema and the definitions it refers to."""
    schema = Settings.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.pop("$defs")
    defs["EventName"] = {"enum": list(EVENT_NAMES)}
    for key in CHART_OWNED:
        schema["properties"].pop(key)
    defs["SpoolSettings"]["properties"].pop("dir")
    for key in ("host", "port"):
        defs["AdminSettings"]["properties"].pop(key)
    schema["additionalProperties"] = False
    schema.pop("title", None)
    schema["description"] = (
        "The bridge configuration (docs/configuration.md) minus chart-owned keys."
    )
    return schema, defs


def instance_schema() -> dict[str, Any]:
    """One entry of `instances`: the instance settings, its token inline or from a Secret."""
    schema = InstanceSettings.model_json_schema(ref_template="#/$defs/{model}")
    properties = schema["properties"]
    for key in ("token_env", "token_file", "token"):
        properties.pop(key)
    properties["token"] = {
        "type": "string",
        "minLength": 1,
        "description": "TokenInstance inline (the chart stores it in a Secret).",
    }
    properties["tokenKey"] = {
        "type": "string",
        "minLength": 1,
        "description": "Key of existingSecret holding this instance's token (default: its name).",
    }
    return closed(properties, description="A RyzeAPI instance.")


def object_of(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description}


def list_of(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object"}, "description": description}


def secret_ref(inline: str, key: str, what: str) -> dict[str, Any]:
    """A secret value given inline or as a key of the operator's own Secret, not both."""
    return closed(
        {
            inline: {"type": "string", "description": f"{what} inline (the chart's Secret)."},
            "existingSecret": {"type": "string", "description": f"Your Secret with the {what}."},
            "key": {"type": "string", "minLength": 1, "default": key},
        },
        description=f"{what}: inline or from existingSecret (key `key`), not both.",
        **{
            "not": {
                "required": [inline, "existingSecret"],
                "properties": {inline: {"minLength": 1}, "existingSecret": {"minLength": 1}},
            }
        },
    )


def admin_token_schema() -> dict[str, Any]:
    """adminToken: a secret reference that the chart may also generate."""
    schema = secret_ref("value", "admin-token", "Admin API bearer token")
    schema["properties"]["generate"] = {
        "type": "boolean",
        "default": True,
        "description": "Neither value nor existingSecret: the chart makes a token (kept across "
        "upgrades); false: one of them is required.",
    }
    return schema


def chart_schema() -> dict[str, Any]:
    config, defs = config_schema()
    string = {"type": "string"}
    boolean = {"type": "boolean"}
    labels = {"type": "object", "additionalProperties": {"type": "string"}}
    return closed(
        {
            "replicaCount": {
                "type": "integer",
                "minimum": 0,
                "description": "Bridge pods; above 1 needs config.cluster.mode kafka, redis or "
                "static, which shares the instances between them (the chart refuses more "
                "without one, saying why).",
            },
            "image": closed(
                {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": string,
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                }
            ),
            "imagePullSecrets": {"type": "array", "items": {"type": "object"}},
            "nameOverride": string,
            "fullnameOverride": string,
            "instances": {
                "type": "object",
                "propertyNames": {"pattern": INSTANCE_NAME_PATTERN},
                "additionalProperties": instance_schema(),
            },
            "existingSecret": string,
            "discovery": closed(
                {
                    "enabled": boolean,
                    "accountToken": string,
                    "accountTokenKey": {"type": "string", "minLength": 1},
                    "include": {"type": "array", "items": string},
                    "exclude": {"type": "array", "items": string},
                    "refreshSeconds": {"type": "number", "exclusiveMinimum": 0},
                    "events": {"type": "array", "items": {"$ref": "#/$defs/EventName"}},
                    "mediaBase64": boolean,
                    "manageConfig": boolean,
                }
            ),
            "configReload": {"enum": ["rollout", "live"]},
            "sinkCredentials": secret_ref("password", "sink-password", "Sink password"),
            "adminToken": admin_token_schema(),
            "tlsSecret": string,
            "config": config,
            "shutdownTimeout": {"type": "integer", "minimum": 1, "maximum": 3600},
            "persistence": closed(
                {
                    "enabled": boolean,
                    "storageClassName": string,
                    "accessModes": {"type": "array", "items": string, "minItems": 1},
                    "size": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?([EPTGMK]i?)?$"},
                }
            ),
            "service": closed(
                {
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                }
            ),
            "serviceAccount": closed(
                {
                    "create": boolean,
                    "name": string,
                    "annotations": labels,
                    "automountServiceAccountToken": boolean,
                }
            ),
            "podAnnotations": labels,
            "podLabels": labels,
            "extraEnv": list_of("Extra EnvVars of the bridge container."),
            "extraVolumes": list_of("Extra volumes of the pod."),
            "extraVolumeMounts": list_of("Extra volumeMounts of the bridge container."),
            "priorityClassName": string,
            "topologySpreadConstraints": list_of(
                "Pod topologySpreadConstraints; without labelSelector, this release's pods."
            ),
            "podSecurityContext": object_of("Pod securityContext."),
            "securityContext": object_of("Container securityContext."),
            "resources": object_of("Container resources."),
            "startupProbe": object_of("Startup probe (/healthz); {} for none."),
            "livenessProbe": object_of("Liveness probe (/healthz)."),
            "readinessProbe": object_of("Readiness probe (/readyz)."),
            "nodeSelector": labels,
            "tolerations": {"type": "array", "items": {"type": "object"}},
            "affinity": object_of("Pod affinity."),
            "podDisruptionBudget": closed(
                {"enabled": boolean, "maxUnavailable": {"type": ["integer", "string"]}}
            ),
            "networkPolicy": closed(
                {
                    "enabled": boolean,
                    "scraper": closed(
                        {
                            "namespaceSelector": object_of(
                                "LabelSelector of the scraper's namespaces ({}: any)."
                            ),
                            "podSelector": object_of("LabelSelector of the scraper's pods."),
                        },
                        description="The Prometheus admitted to the admin port.",
                    ),
                    "ingressFrom": list_of("More NetworkPolicyPeers admitted to the admin port."),
                }
            ),
            "serviceMonitor": closed(
                {
                    "enabled": boolean,
                    "additionalLabels": labels,
                    "interval": string,
                    "scrapeTimeout": string,
                    "tlsConfig": object_of(
                        "Endpoint tlsConfig with admin TLS; {}: ca.crt of tlsSecret."
                    ),
                }
            ),
            "prometheusRule": closed(
                {
                    "enabled": boolean,
                    "additionalLabels": labels,
                    "runbookBaseUrl": {"type": "string", "pattern": "^https?://[^/\\s]+"},
                }
            ),
            "grafanaDashboard": closed({"enabled": boolean, "additionalLabels": labels}),
            "global": {"type": "object"},
        },
        **{
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "ryze-bridge chart values",
            "$defs": defs,
            "if": {"properties": {"existingSecret": {"const": ""}}},
            "then": {
                "properties": {"instances": {"additionalProperties": {"required": ["token"]}}}
            },
            "else": {
                "properties": {
                    "instances": {"additionalProperties": {"not": {"required": ["token"]}}}
                }
            },
        },
    )


def render() -> str:
    return json.dumps(chart_schema(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date; run {__file__}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
