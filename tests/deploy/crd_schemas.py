"""The official prometheus-operator CRDs (ServiceMonitor, PrometheusRule), taken whole from the
Go module github.com/prometheus-operator/prometheus-operator (`go mod download` through the Go
module proxy; the CRDs are under example/prometheus-operator-crd/), cached beside the built
tools. Their openAPIV3Schema validates the chart's monitoring resources offline, made strict
(unknown fields refused) because the API server would prune them silently; the API-server
test applies the same files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.services import unavailable

MODULE = "github.com/prometheus-operator/prometheus-operator"
# The newest version of the module (the repository root, not pkg/apis/monitoring) served to us.
VERSION = "v0.85.0"
CRD_DIR = "example/prometheus-operator-crd"
FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def cache_dir() -> Path:
    base = Path(os.environ.get("RYZE_CACHE_DIR", Path.home() / ".cache" / "ryze-bridge"))
    return base / "crds" / f"prometheus-operator-{VERSION}"


def download(target: Path) -> None:
    """Fetch the module with `go mod download` and keep only the CRDs the chart uses."""
    go = shutil.which("go")
    if go is None:
        unavailable("go is not installed; it fetches the prometheus-operator CRDs")
    with tempfile.TemporaryDirectory(prefix="ryze-crds-") as tmp:
        result = subprocess.run(
            [str(go), "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            capture_output=True, text=True, timeout=300, check=False, cwd=tmp,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )  # fmt: skip
        if result.returncode != 0:
            unavailable(
                f"go mod download {MODULE}@{VERSION} failed: {result.stdout}{result.stderr}"
            )
        module_dir = Path(json.loads(result.stdout)["Dir"])
        staging = Path(tempfile.mkdtemp(prefix=".crds-", dir=target.parent))
        for name in FILES.values():
            shutil.copyfile(module_dir / CRD_DIR / name, staging / name)
        staging.rename(target)


def crd_files() -> dict[str, Path]:
    """The official CRD files by kind, downloaded once per version."""
    target = cache_dir()
    if not all((target / name).exists() for name in FILES.values()):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        download(target)
    return {kind: target / name for kind, name in FILES.items()}


def python_pattern(pattern: str) -> str:
    """A Go (RE2) pattern for Python's re: a top-level `(?i)` after `^` moves to the front,
    where Python wants global flags (pure)."""
    if pattern.startswith("^(?i)"):
        return "(?i)^" + pattern[len("^(?i)") :]
    return pattern


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI structural schema with unknown fields refused wherever the API server would
    prune them: objects with `properties` and neither `additionalProperties` nor
    x-kubernetes-preserve-unknown-fields (pure)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict) and key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif isinstance(value, dict):
            out[key] = strict(value)
        elif isinstance(value, list):
            out[key] = [strict(v) if isinstance(v, dict) else v for v in value]
        elif key == "pattern" and isinstance(value, str):
            out[key] = python_pattern(value)
        else:
            out[key] = value
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(kind: str) -> dict[str, Any]:
    """The strict JSON schema of a whole `kind` object from its official CRD's served version,
    with apiVersion, kind and metadata pinned."""
    crd = yaml.safe_load(crd_files()[kind].read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    schema = strict(version["schema"]["openAPIV3Schema"])
    group = crd["spec"]["group"]
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    return schema
