"""The upstream's sockets share one TLS context: the configured CA's, or the system's trust
built once; none for a plain-http upstream. The simulator serves https/wss when its config
file names a certificate and key."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import yaml

from bridge.settings import Settings
from bridge.simulator.cli import config_from
from bridge.wiring import socket_tls


def settings(base_url: str, ca_file: Path | None = None) -> Settings:
    upstream: dict[str, object] = {"base_url": base_url}
    if ca_file is not None:
        upstream["ca_file"] = str(ca_file)
    return Settings.model_validate({"upstream": upstream, "instances": {"a": {"token": "t-1"}}})


def test_a_plain_upstream_has_no_context() -> None:
    """``http://`` means ``ws://`` sockets: no TLS context (the library refuses one there),
    even with a CA configured."""
    assert socket_tls(settings("http://127.0.0.1:8080"), None) is None
    context = ssl.create_default_context()
    assert socket_tls(settings("http://127.0.0.1:8080"), context) is None


def test_a_configured_ca_is_the_sockets_context() -> None:
    """With ``upstream.ca_file`` the sockets use the very context that trusts it."""
    context = ssl.create_default_context()
    assert socket_tls(settings("https://api.example"), context) is context


def test_without_a_ca_the_system_trust_is_built_once_and_verifies() -> None:
    """Without a CA file the sockets get one context of the system's trust, verifying the
    certificate and the host name as the library's own default would."""
    built = socket_tls(settings("https://api.example"), None)
    assert isinstance(built, ssl.SSLContext)
    assert built.verify_mode is ssl.CERT_REQUIRED
    assert built.check_hostname


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
