"""A real Kubernetes API server for the chart's tests: etcd and kube-apiserver built from their
Go modules by scripts/kube-tools.sh, started on free loopback ports with certificates made
here by openssl, a client certificate in group system:masters for helm's kubeconfig. There is
no kubelet nor controller manager: objects are validated, admitted and stored; pods never run.

Everything lives in one temporary directory that `stop` removes with the processes.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import services_required

START_TIMEOUT = 180.0  # seconds for etcd + the API server to be ready on a busy 2-core machine


def cache_bin() -> Path:
    base = Path(os.environ.get("RYZE_CACHE_DIR", Path.home() / ".cache" / "ryze-bridge"))
    return base / "bin"


def tool_missing(reason: str) -> None:
    """Under CI=true or BRIDGE_REQUIRE_SERVICES=1 a tool that is not there fails the test;
    elsewhere it skips it, saying why."""
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def binaries() -> tuple[Path, Path]:
    """etcd and kube-apiserver from the cache. The test never builds them: scripts/test.sh
    builds them in the background and runs these tests only once that build has succeeded."""
    names = ("etcd", "kube-apiserver")
    missing = [n for n in names if not (cache_bin() / n).exists()]
    if missing:
        tool_missing(
            f"{', '.join(missing)} not built in {cache_bin()}: run bash scripts/kube-tools.sh "
            "(minutes the first time; scripts/test.sh does it)"
        )
    return cache_bin() / "etcd", cache_bin() / "kube-apiserver"


def free_port() -> int:
    """A loopback port free right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(pki: Path) -> None:
    """A throw-away CA, the API server's serving certificate for 127.0.0.1, a client
    certificate in group system:masters, and the service-account signing key (EC P-256)."""
    if shutil.which("openssl") is None:
        tool_missing("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=ryze-bridge-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=pki)  # fmt: skip
    leaves = {
        "server": ("/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth\n"),
        "client": ("/O=system:masters/CN=ryze-bridge-test", "extendedKeyUsage=clientAuth\n"),
    }  # fmt: skip
    for name, (subject, extensions) in leaves.items():
        (pki / f"{name}.ext").write_text(extensions, encoding="utf-8")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
                cwd=pki)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile",
                f"{name}.ext", cwd=pki)  # fmt: skip
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig(server: str, pki: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki / "client.crt"),
                    "client-key": str(pki / "client.key"),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }


@dataclass
class KubeAPI:
    """A running etcd + kube-apiserver pair and a client for it."""

    work: Path
    server: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def pki(self) -> Path:
        return self.work / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.work / "kubeconfig"

    def spawn(self, name: str, args: list[str]) -> None:
        log = self.work / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.processes.append(
                subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs
        )

    def start(self) -> None:
        etcd, apiserver = binaries()
        self.pki.mkdir()
        make_certificates(self.pki)
        client, peer, secure = free_port(), free_port(), free_port()
        self.spawn("etcd", [
            str(etcd), "--name", "default", "--data-dir", str(self.work / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        pki = self.pki
        self.spawn("kube-apiserver", [
            str(apiserver), f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={secure}", f"--cert-dir={self.work / 'certs'}",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
            "--profiling=false",
        ])  # fmt: skip
        self.server = f"https://127.0.0.1:{secure}"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.server, pki)), encoding="utf-8")
        self.wait_ready()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        self.processes.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "client.crt"), str(self.pki / "client.key"))
        return ctx

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One API call; the status and the decoded body (errors included)."""
        data = None if body is None else json.dumps(body).encode()
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=self.context(), timeout=30)
        try:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            status, text = resp.status, resp.read()
        finally:
            conn.close()
        try:
            decoded: dict[str, Any] = json.loads(text)
        except ValueError:
            decoded = {"text": text.decode(errors="replace")}
        return status, decoded

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead:
                pytest.fail(f"exited early: {dead}\n{self.log_tail()}")
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return
                last = f"{status} {body}"
            except (OSError, ssl.SSLError) as err:
                last = repr(err)
            time.sleep(1)
        pytest.fail(
            f"the API server was not ready in {START_TIMEOUT} s ({last})\n{self.log_tail()}"
        )

    def apply_crd(self, crd: dict[str, Any]) -> None:
        """Create a CustomResourceDefinition and wait until it is established and served."""
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        status, body = self.request("POST", base, crd)
        assert status == 201, body
        name = crd["metadata"]["name"]
        group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
        plural = crd["spec"]["names"]["plural"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, current = self.request("GET", f"{base}/{name}")
            conditions = (current.get("status") or {}).get("conditions") or []
            established = any(
                c["type"] == "Established" and c["status"] == "True" for c in conditions
            )
            status, listing = self.request("GET", f"/apis/{group}/{version}")
            served = status == 200 and any(r["name"] == plural for r in listing["resources"])
            if established and served:
                return
            time.sleep(0.5)
        pytest.fail(f"CRD {name} was not established in 60 s")

    def resource_path(self, obj: dict[str, Any], namespace: str) -> str:
        """The collection path of an object's kind, from the server's discovery."""
        api_version: str = obj["apiVersion"]
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, listing = self.request("GET", prefix)
        assert status == 200, listing
        resource = next(
            r for r in listing["resources"] if r["kind"] == obj["kind"] and "/" not in r["name"]
        )
        if resource["namespaced"]:
            return f"{prefix}/namespaces/{namespace}/{resource['name']}"
        return f"{prefix}/{resource['name']}"

    def get(self, obj: dict[str, Any], namespace: str) -> tuple[int, dict[str, Any]]:
        return self.request(
            "GET", f"{self.resource_path(obj, namespace)}/{obj['metadata']['name']}"
        )

    def dry_run_create(self, obj: dict[str, Any], namespace: str) -> tuple[int, dict[str, Any]]:
        """A server-side dry-run create with strict field validation (unknown or duplicate
        fields are errors, not silently pruned)."""
        path = self.resource_path(obj, namespace) + "?dryRun=All&fieldValidation=Strict"
        return self.request("POST", path, obj)


def start_kube_api() -> KubeAPI:
    api = KubeAPI(work=Path(tempfile.mkdtemp(prefix="ryze-kube-api-")))
    try:
        api.start()
    except BaseException:
        api.stop()
        raise
    return api
