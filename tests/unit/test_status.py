"""The fleet status, pure: exclusive states, the /instances filters and their refusals, trouble
first under a limit, the summary over every instance, and the merge of replicas' answers
that says which replica owns which instance and which did not answer."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bridge.cli import main
from bridge.status import StatusQuery, fleet_state, parse_query, select, with_states
from bridge.statusview import ReplicaAnswer, merge, render


def test_runner_states_map_to_the_exclusive_fleet_states() -> None:
    """connected is silent past the silence bound; starting, reconnecting, disconnected and
    stopped are connecting; failed and paused stay; the runner's word is kept as phase."""
    assert fleet_state({"state": "connected", "seconds_since_last_frame": 1.0}, 75) == "connected"
    assert fleet_state({"state": "connected", "seconds_since_last_frame": 80.0}, 75) == "silent"
    assert fleet_state({"state": "connected", "seconds_since_last_frame": None}, 75) == "connected"
    for phase in ("starting", "reconnecting", "disconnected", "stopped"):
        assert fleet_state({"state": phase}, 75) == "connecting"
    assert fleet_state({"state": "failed"}, 75) == "failed"
    rows = with_states({"a": {"state": "reconnecting"}, "p": {"state": "paused"}}, 75)
    assert rows == {"a": {"state": "connecting", "phase": "reconnecting"}, "p": {"state": "paused"}}


def test_query_parameters_are_read_or_refused_by_name() -> None:
    """state (a comma list of known states), name (a glob) and limit (a whole number) are
    read; an unknown state, a bad limit or an unknown parameter is refused, saying which."""
    query = parse_query({"state": "failed,connecting", "name": "loja-*", "limit": "10"})
    assert query == StatusQuery(frozenset({"failed", "connecting"}), "loja-*", 10)
    assert parse_query({}) == StatusQuery()
    assert parse_query(query.params()) == query  # what the CLI sends is what a replica reads
    assert "unknown state broken" in str(parse_query({"state": "failed,broken"}))
    assert "limit" in str(parse_query({"limit": "-1"}))
    for odd in ("²", "١٢", "9" * 5000):  # Unicode digits, absurdly long: refused, named
        assert "limit" in str(parse_query({"limit": odd}))
    assert "unknown parameter instance" in str(parse_query({"instance": "x"}))


def fleet(n: int) -> dict[str, dict[str, object]]:
    """n instances: every tenth failed, every seventh reconnecting, the rest connected."""
    rows: dict[str, dict[str, object]] = {}
    for i in range(n):
        phase = "failed" if i % 10 == 0 else "reconnecting" if i % 7 == 0 else "connected"
        rows[f"inst-{i:04d}"] = {"state": phase, "seconds_since_last_frame": 1.0}
    return with_states(rows, 75)


def test_select_summarizes_everything_and_ships_only_the_limit_trouble_first() -> None:
    """Of 5,000 rows a limit of 10 ships 10, failed first and then connecting, in name order;
    the summary counts all 5,000 and matched the rows the filters keep."""
    answer = select(fleet(5000), StatusQuery(limit=10))
    assert answer["summary"] == {"failed": 500, "connecting": 643, "silent": 0, "paused": 0,
                                 "connected": 3857, "total": 5000}  # fmt: skip
    assert answer["matched"] == 5000
    shown = answer["instances"]
    assert isinstance(shown, dict)
    assert list(shown) == [f"inst-{i:04d}" for i in range(0, 100, 10)]
    glob = select(fleet(5000), StatusQuery(frozenset({"connecting"}), "inst-00*", 0))
    kept = glob["instances"]
    assert isinstance(kept, dict)
    assert glob["matched"] == len(kept) == 13
    assert {r["state"] for r in kept.values()} == {"connecting"}


def test_merge_names_owners_and_the_replicas_that_did_not_answer() -> None:
    """Two replicas' answers merge into one summary and one list, each row naming the
    replica that owns it, the limit applied again over all; a replica that did not answer is
    listed with its error and counts nothing."""
    rows = fleet(40)
    first = {n: r for n, r in rows.items() if n < "inst-0020"}
    second = {n: r for n, r in rows.items() if n >= "inst-0020"}
    answers = [
        ReplicaAnswer("http://a:9464", {**select(first, StatusQuery(limit=3)),
                                        "cluster": {"mode": "redis", "replica": "r1"}}),
        ReplicaAnswer("http://b:9464", {**select(second, StatusQuery(limit=3)),
                                        "cluster": {"mode": "redis", "replica": "r2"}}),
        ReplicaAnswer("http://c:9464", error="ConnectError"),
    ]  # fmt: skip
    view = merge(answers, 3)
    assert view["summary"] == {"failed": 4, "connecting": 5, "silent": 0, "paused": 0,
                               "connected": 31, "total": 40}  # fmt: skip
    assert view["matched"] == 40
    shown, replicas = view["instances"], view["replicas"]
    assert isinstance(shown, list)
    assert isinstance(replicas, list)
    assert [(r["name"], r["owner"]) for r in shown] == [
        ("inst-0000", "r1"), ("inst-0010", "r1"), ("inst-0020", "r2"),
    ]  # fmt: skip
    assert replicas[2] == {"url": "http://c:9464", "ok": False, "error": "ConnectError"}
    text = render(view, owners=True)
    lines = text.splitlines()
    assert lines[0] == "40 instances: 4 failed, 5 connecting, 0 silent, 0 paused, 31 connected"
    assert lines[1] == "replicas: 2 answered (r1, r2); did not answer: http://c:9464 (ConnectError)"
    assert lines[2].split()[:4] == ["instance", "state", "phase", "owner"]
    assert lines[-1] == "showing 3 of 40 matching (--limit 0: all)"


def closed_port() -> int:
    """A loopback port that refuses connections (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_status_command_refuses_bad_filters_and_names_an_unreachable_replica(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad --state or a negative --limit exits 2 naming the option; a replica that refuses
    the connection prints no table of nothing, is named on stderr, and exits 1; --json still
    prints the view with that replica marked not ok."""
    assert main(["status", "--state", "sleepy"]) == 2
    assert "--state: unknown state sleepy" in capsys.readouterr().err
    assert main(["status", "--limit", "-1"]) == 2
    assert "--limit" in capsys.readouterr().err
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["status", "--url", url]) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"{url}: ConnectError\n")
    assert main(["status", "--url", url, "--json"]) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["replicas"] == [{"url": url, "ok": False, "error": "ConnectError"}]
    assert view["summary"]["total"] == 0


class NotJson(BaseHTTPRequestHandler):
    """Answers every GET with 200 and an HTML page (another server on the admin port)."""

    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_status_lists_a_non_json_answer_as_not_answered_and_hides_userinfo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A replica answering 200 with a non-JSON body is listed as not answered (no
    traceback, exit 1); a ``user:pass@`` in a --replicas URL is never printed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url = f"http://user:s3cret@127.0.0.1:{port}"
        assert main(["status", "--replicas", url]) == 1
        out = capsys.readouterr()
        assert out.err == f"http://127.0.0.1:{port}: not a status answer (not JSON)\n"
        assert "s3cret" not in out.out + out.err
        assert main(["status", "--replicas", url, "--json"]) == 1
        assert "s3cret" not in capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Recording(BaseHTTPRequestHandler):
    """A would-be proxy: records what reaches it, answers 502."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(f"{self.path} {self.headers.get('Authorization', '')}")
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_status_sends_the_admin_token_to_the_replicas_not_to_a_proxy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a proxy named in the environment (``HTTP_PROXY``, ``ALL_PROXY``), ``status`` still
    asks each replica directly: the bearer token never reaches the proxy."""
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    replica = ThreadingHTTPServer(("127.0.0.1", 0), NotJson)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (proxy, replica)]
    for thread in threads:
        thread.start()
    try:
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("ADMIN_TOKEN_FOR_TEST", "admin-tok-77")
        url = f"http://127.0.0.1:{replica.server_address[1]}"
        main(["status", "--replicas", url, "--token-env", "ADMIN_TOKEN_FOR_TEST"])
        out = capsys.readouterr()
        assert "not a status answer" in out.err  # the replica itself answered
        assert Recording.seen == []
    finally:
        for server in (proxy, replica):
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)
