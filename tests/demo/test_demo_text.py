"""The demo's pure parts: addresses, the command to suggest, the sample record, what it says."""

from __future__ import annotations

from pathlib import Path

from bridge.demo import (
    CONFIG_HEADER,
    admin_url,
    cli_command,
    config_refusal,
    is_event_line,
    shorten,
    where_lines,
)


def test_admin_url_brackets_an_ipv6_host() -> None:
    """An IPv4 host is written as is, an IPv6 one in brackets."""
    assert admin_url("127.0.0.1", 9464) == "http://127.0.0.1:9464"
    assert admin_url("::1", 9464) == "http://[::1]:9464"


def test_cli_command_inside_the_project_is_its_relative_path() -> None:
    """The project's own .venv/bin/ryze-bridge (not on the PATH) is suggested by its path."""
    assert cli_command("/src/repo/.venv/bin/ryze-bridge", Path("/src/repo")) == (
        ".venv/bin/ryze-bridge"
    )


def test_cli_command_of_an_installed_tool_is_its_name() -> None:
    """A command installed elsewhere (pipx, uv tool) is suggested by name; as typed if relative;
    `python -m bridge` as that."""
    assert cli_command("/home/u/.local/bin/ryze-bridge", Path("/src/repo")) == "ryze-bridge"
    assert cli_command("bin/ryze-bridge", Path("/src/repo")) == "bin/ryze-bridge"
    assert cli_command("/src/repo/bridge/__main__.py", Path("/src/repo")) == "python -m bridge"


def test_shorten_cuts_only_long_text() -> None:
    """Text within the limit is unchanged; longer text is cut to the limit, ending in '…'."""
    assert shorten("abc", limit=3) == "abc"
    assert shorten("abcdef", limit=4) == "abc…"
    assert len(shorten("x" * 1000)) == 300


def test_is_event_line_skips_gap_markers_and_junk() -> None:
    """An event record is a sample; a gap marker, a line without an event or a broken line
    is not."""
    assert is_event_line(b'{"event":"message.exchange","data":{}}\n')
    assert not is_event_line(b'{"event":"bridge.gap","data":{}}\n')
    assert not is_event_line(b'{"reason":"too_large"}\n')
    assert not is_event_line(b'{"event":"mess')


def test_where_lines_name_the_admin_metrics_config_output_and_commands() -> None:
    """With the admin bound: its URL, the metrics URL, the config and output files, and the
    status, check-config and tail commands built from them."""
    lines = where_lines("http://127.0.0.1:5", Path("d/ryze-demo.yaml"), Path("d/e.jsonl"), "rb")
    assert lines == [
        "admin    http://127.0.0.1:5  (/metrics, /healthz, /readyz, /instances)",
        "metrics  http://127.0.0.1:5/metrics",
        "config   d/ryze-demo.yaml",
        "output   d/e.jsonl",
        "try, in another terminal while it runs:",
        "  rb status --url http://127.0.0.1:5",
        "  rb check-config --config d/ryze-demo.yaml",
        "  tail -f d/e.jsonl",
    ]


def test_where_lines_say_when_the_admin_never_listened() -> None:
    """Without a bound admin server the lines say so and suggest no status command."""
    lines = where_lines(None, Path("c.yaml"), Path("o.jsonl"), "rb")
    assert lines[0].startswith("admin    not listening after ")
    assert not any("status" in line for line in lines)


def test_config_refusal_only_for_a_file_the_demo_did_not_write(tmp_path: Path) -> None:
    """The demo's config path is free when absent or holding an earlier run's config; any
    other file there (or a directory) is refused with a message naming it."""
    path = tmp_path / "ryze-demo.yaml"
    assert config_refusal(path) is None
    path.write_text(CONFIG_HEADER + "instances: {}\n", encoding="utf-8")
    assert config_refusal(path) is None
    path.write_text("instances: {my-shop: {}}\n", encoding="utf-8")
    refusal = config_refusal(path)
    assert refusal is not None
    assert str(path) in refusal
    path.unlink()
    path.mkdir()
    assert config_refusal(path) is not None
