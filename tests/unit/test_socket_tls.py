"""The upstream's sockets share one TLS context of the upstream's trust (the configured CA's,
or the system's), built once; none for a plain-http upstream. The simulator serves https/wss
when its config file names a certificate and key."""

from __future__ import annotations

import argparse
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml

from bridge.settings import Settings
from bridge.simulator.cli import config_from
from bridge.wiring import socket_tls, upstream_ssl


def settings(base_url: str, ca_file: Path | None = None) -> Settings:
    upstream: dict[str, object] = {"base_url": base_url}
    if ca_file is not None:
        upstream["ca_file"] = str(ca_file)
    return Settings.model_validate({"upstream": upstream, "instances": {"a": {"token": "t-1"}}})


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA certificate (openssl, as scripts/services.sh makes the suite's)."""
    pem = directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(directory / f"{name}.key"),
         "-out", str(pem)],
        check=True, capture_output=True,
    )  # fmt: skip
    return pem


def subjects(context: ssl.SSLContext) -> list[str]:
    return [str(cert["subject"]) for cert in context.get_ca_certs()]


def test_a_plain_upstream_has_no_context(tmp_path: Path) -> None:
    """``http://`` means ``ws://`` sockets: no TLS context (the library refuses one there),
    even with a CA configured (which made every connect fail before)."""
    assert socket_tls(settings("http://127.0.0.1:8080")) is None
    assert socket_tls(settings("http://127.0.0.1:8080", make_ca(tmp_path, "ca"))) is None


def test_a_configured_ca_is_what_the_sockets_trust(tmp_path: Path) -> None:
    """With ``upstream.ca_file`` the sockets' context trusts that CA, and only it, and checks
    the certificate and the host name."""
    context = socket_tls(settings("https://api.example", make_ca(tmp_path, "private-ca")))
    assert context is not None
    assert len(subjects(context)) == 1
    assert "private-ca" in subjects(context)[0]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_without_a_ca_file_the_system_trust_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a CA file the sockets' context holds the system's trust, as the library's
    default context would (here the system's bundle is ``SSL_CERT_FILE``), and the REST
    client's is another context of the same trust."""
    monkeypatch.setenv("SSL_CERT_FILE", str(make_ca(tmp_path, "system-ca")))
    context = socket_tls(settings("https://api.example"))
    assert context is not None
    assert any("system-ca" in subject for subject in subjects(context))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    rest = upstream_ssl(settings("https://api.example"))
    assert rest is not context
    assert subjects(rest) == subjects(context)


def test_the_simulator_reads_its_certificate_from_its_config_file(tmp_path: Path) -> None:
    """``tls_cert`` and ``tls_key`` in the simulator's config file make it serve https/wss;
    without them it serves plain http."""
    file = tmp_path / "sim.yaml"
    file.write_text(yaml.safe_dump({"tls_cert": "/certs/s.crt", "tls_key": "/certs/s.key"}))
    args = argparse.Namespace(
        config=file, instances=1, account_tokens=[], preconfigured=False, rate=1.0,
        ping_interval=20.0, pong_timeout=20.0, rate_limit=100, rate_window=60.0,
        record_frames=False, always_emit=False, prebuilt=0, media_bytes=0, stamp_sent=False,
        seed=None, id_tag="", host="127.0.0.1", port=0,
    )  # fmt: skip
    config = config_from(args)
    assert (config.tls_cert, config.tls_key) == ("/certs/s.crt", "/certs/s.key")
    file.write_text(yaml.safe_dump({}))
    assert config_from(args).tls_cert is None
