"""Settings: YAML plus environment overrides, closed sections, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from bridge.errors import ConfigError
from bridge.pipeline.events import EVENT_NAMES, EventName
from bridge.settings import insecure_choices, load_settings, masked_dump, resolve_token

TOKEN = "tok-7f3a9c1e-secret-value"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def test_design_example_loads(tmp_path: Path) -> None:
    """The example config of design.md §2 is valid and every value lands where it says."""
    path = write(
        tmp_path,
        """
upstream:
  base_url: https://ryzeapi.cloud
  max_frame_bytes: 16777216
instances:
  loja-centro:
    token_env: RYZE_TOKEN_LOJA_CENTRO
    events: [message.exchange, message.status]
    media_base64: false
    manage_config: true
filter:
  drop_events: []
sink:
  kind: kafka
  kafka:
    bootstrap_servers: 127.0.0.1:9092
    topic: "ryze.{instance}.{event}"
    key: instance
    acks: all
    compression: zstd
  redis:
    url: redis://127.0.0.1:6379/0
    stream: "ryze:{instance}:{event}"
    maxlen: 1000000
  file:
    path: ./events.jsonl
  dlq: "ryze.dlq"
spool:
  dir: /var/lib/ryze-bridge/spool
  max_bytes: 1073741824
  when_full: drop_newest
  fsync: interval
  fsync_interval_ms: 50
shutdown_timeout: 25
admin:
  host: 0.0.0.0
  port: 9464
""",
    )
    settings = load_settings(path)
    assert settings.instances["loja-centro"].events == ["message.exchange", "message.status"]
    assert settings.sink.kafka.acks == "all"
    assert settings.spool.max_bytes == 1073741824
    assert settings.shutdown_timeout == 25.0


def test_no_file_gives_defaults() -> None:
    """Without a file every section has its documented default."""
    settings = load_settings(None)
    assert settings.sink.kind == "kafka"
    assert settings.sink.kafka.topic == "ryze.{event}"
    assert settings.sink.kafka.key == "instance"
    assert settings.sink.redis.stream == "ryze:{event}"
    assert settings.spool.when_full == "drop_newest"
    assert settings.instances == {}


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RYZE_BRIDGE__SECTION__KEY overrides the file, deep-merged with the rest of the section."""
    path = write(
        tmp_path,
        "sink:\n  kind: kafka\n  kafka:\n    topic: 'a.{event}'\n"
        "instances:\n  shop:\n    token_env: T\n",
    )
    monkeypatch.setenv("RYZE_BRIDGE__SINK__KIND", "redis")
    monkeypatch.setenv("RYZE_BRIDGE__INSTANCES__SHOP__MEDIA_BASE64", "true")
    settings = load_settings(path)
    assert settings.sink.kind == "redis"
    assert settings.sink.kafka.topic == "a.{event}"
    assert settings.instances["shop"].media_base64 is True
    assert settings.instances["shop"].token_env == "T"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sink:\n  kind: mongo\n", "sink.kind: 'mongo' is not allowed"),
        ("instances:\n  a:\n    tokn: x\n    token: y\n", "instances.a.tokn: unknown key"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("shutdown_timeout: soon\n", "shutdown_timeout: Input should be a valid number"),
        (
            "instances:\n  a:\n    token: x\n    events: [message.bogus]\n",
            "instances.a.events.0: 'message.bogus' is not allowed",
        ),
        (
            "sink:\n  kafka:\n    topic: 'ryze.{tenant}'\n",
            "sink.kafka.topic: unknown placeholder {tenant}",
        ),
        ("sink:\n  redis:\n    stream: 'ryze:{0}'\n", "sink.redis.stream: unknown placeholder {0}"),
        ("instances:\n  a:\n    events: []\n", "instances.a: give exactly one token source"),
        (
            "instances:\n  a:\n    token: x\n    token_env: Y\n",
            "instances.a: give exactly one token source",
        ),
        ("spool:\n  when_full: block\n", "spool.when_full: 'block' is not allowed"),
        ("sink:\n  redis:\n    url: 'redis://u:pw@h/0'\n", "sink.redis.url: the URL must not"),
        ("admin:\n  port: 70000\n", "admin.port: Input should be less than or equal to 65535"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of invalid value is refused with a message that starts with its dotted key."""
    assert expected in problems_of(write(tmp_path, text))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file, broken YAML and a non-mapping top level are ConfigErrors naming the file."""
    missing = tmp_path / "nope.yaml"
    assert "cannot read config file" in problems_of(missing)
    assert "not valid YAML" in problems_of(write(tmp_path, "a: [\n"))
    assert "must be a mapping" in problems_of(write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f'instances:\n  shop: {{token: "{TOKEN}" events: []}}\n', "line 2, column"),
        (f"instances:\n  shop:\n\ttoken: {TOKEN}\n", "line 3, column 1"),
        (f'instances:\n  shop: {{token: "{TOKEN}", events: [\n', "line 3, column 1"),
        (f"instances:\n  shop:\n    token: *{TOKEN}\n", "line 3, column"),
        (f"instances:\n  shop:\n    token: !{TOKEN} x\n", "line 3, column"),
    ],
    ids=["missing-comma", "tab-indent", "unclosed-list", "alias", "tag"],  # not the token
)
def test_a_yaml_error_names_line_and_column_never_the_text(
    tmp_path: Path, text: str, where: str
) -> None:
    """A YAML syntax error on a line that holds a token is reported with its line, column and
    the problem, never with the offending text (PyYAML's own message quotes the line)."""
    problems = problems_of(write(tmp_path, text))
    assert "not valid YAML" in problems
    assert where in problems
    assert TOKEN not in problems


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("?password=pw-secret-1", "password"),
        ("?ssl_cert_reqs=none", "ssl_cert_reqs"),
        ("?db=1&password=pw-secret-1&socket_timeout=1", "password, socket_timeout"),
        ("?password%3Dpw-secret-1", "an unreadable option"),
        ("?pw-secret-1", "an unreadable option"),
    ],
)
def test_a_redis_url_takes_no_query_option_but_the_database(
    tmp_path: Path, query: str, names: str
) -> None:
    """A Redis URL's query options would bypass the keys that hold a secret or switch TLS
    verification: refused, naming the options and never their values."""
    text = f"sink:\n  kind: redis\n  redis:\n    url: 'rediss://h:6380/0{query}'\n"
    problems = problems_of(write(tmp_path, text))
    assert f"sink.redis.url: the URL takes no query option but db (found: {names})" in problems
    assert "pw-secret-1" not in problems


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("?db=pw-secret-1", "the URL's db option must be one number"),
        ("?db=1&db=2", "the URL's db option must be one number"),
        ("#pw-secret-1", "the URL must not carry a fragment"),
    ],
)
def test_a_redis_url_db_is_one_number_and_no_fragment(
    tmp_path: Path, query: str, problem: str
) -> None:
    """The database option is one number, and a fragment (where a secret could sit and be
    printed) is refused; neither is echoed."""
    text = f"sink:\n  kind: redis\n  redis:\n    url: 'rediss://h:6380/0{query}'\n"
    problems = problems_of(write(tmp_path, text))
    assert problem in problems
    assert "pw-secret-1" not in problems


def test_a_redis_url_may_choose_its_database_in_the_query(tmp_path: Path) -> None:
    """``?db=N`` (the way a unix-socket URL names its database) is accepted."""
    text = "sink:\n  kind: redis\n  redis:\n    url: 'unix:///run/redis.sock?db=3'\n"
    settings = load_settings(write(tmp_path, text))
    assert str(settings.sink.redis.url).endswith("?db=3")


INSECURE = [
    ("upstream:\n  base_url: http://ryzeapi.example\n", "upstream.base_url: plain http"),
    ("upstream:\n  base_url: http://evil.localhost:8080\n", "upstream.base_url: plain http"),
    (
        "sink:\n  kafka:\n    bootstrap_servers: k1.example:9092,127.0.0.1:9092\n"
        "    security_protocol: SASL_PLAINTEXT\n    sasl_mechanism: PLAIN\n"
        "    sasl_username: u\n    sasl_password_env: PW\n",
        "sink.kafka.security_protocol: SASL PLAIN without TLS",
    ),
    (
        "sink:\n  kafka:\n    bootstrap_servers: k1.example:9093\n"
        "    security_protocol: SSL\n    ssl_check_hostname: false\n",
        "sink.kafka.ssl_check_hostname: false",
    ),
    (
        "sink:\n  kind: redis\n  redis:\n    url: redis://cache.example:6379/0\n"
        "    password_env: PW\n",
        "sink.redis.url: a password over redis://",
    ),
]


@pytest.mark.parametrize(("text", "named"), INSECURE)
def test_insecure_choices_towards_another_host_are_refused_unless_allowed(
    tmp_path: Path, text: str, named: str
) -> None:
    """A secret sent in clear or a check skipped towards a host that is not this machine is
    refused naming the key; ``allow_insecure: true`` accepts it (and the start logs it)."""
    assert named in problems_of(write(tmp_path, text))
    settings = load_settings(write(tmp_path, text + "allow_insecure: true\n"))
    assert any(
        choice.startswith(named.split(":", maxsplit=1)[0]) for choice in insecure_choices(settings)
    )


@pytest.mark.parametrize(
    "text",
    [
        "upstream:\n  base_url: http://127.0.0.1:8080\n",
        "upstream:\n  base_url: http://localhost:8080\n",
        "upstream:\n  base_url: 'http://[::1]:8080'\n",
        "sink:\n  kafka:\n    bootstrap_servers: 127.0.0.1:9092,localhost:9093\n"
        "    security_protocol: SASL_PLAINTEXT\n    sasl_mechanism: PLAIN\n"
        "    sasl_username: u\n    sasl_password_env: PW\n",
        "sink:\n  kind: redis\n  redis:\n    url: redis://127.0.0.1:6379/0\n    password_env: PW\n",
        "sink:\n  kind: redis\n  redis:\n    url: rediss://cache.example:6380/0\n"
        "    password_env: PW\n",
        "sink:\n  kind: redis\n  redis:\n    url: redis://cache.example:6379/0\n",
    ],
)
def test_loopback_and_tls_stay_allowed(tmp_path: Path, text: str) -> None:
    """Plain connections to this machine (the simulator, the tests) and TLS or password-free
    connections elsewhere need no allow_insecure."""
    assert insecure_choices(load_settings(write(tmp_path, text))) == []


def test_tokens_never_in_repr_or_dump(tmp_path: Path) -> None:
    """An inline token is a secret: not in repr, str, or the masked dump."""
    settings = load_settings(write(tmp_path, f"instances:\n  a:\n    token: {TOKEN}\n"))
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in str(masked_dump(settings))
    assert masked_dump(settings)["instances"]["a"]["token"] == "**********"


def test_resolve_token_from_each_source(tmp_path: Path) -> None:
    """token, token_env and token_file each resolve; whitespace around a file token is dropped."""
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n", encoding="utf-8")
    text = (
        f"instances:\n  inline:\n    token: {TOKEN}\n  env:\n    token_env: SHOP_TOKEN\n"
        f"  file:\n    token_file: {token_file}\n"
    )
    settings = load_settings(write(tmp_path, text))
    environ = {"SHOP_TOKEN": TOKEN}
    for name, instance in settings.instances.items():
        assert resolve_token(name, instance, environ).get_secret_value() == TOKEN


def test_unresolvable_token_names_the_key(tmp_path: Path) -> None:
    """A token env var that is unset, or a token file that is missing, names the instance key."""
    text = (
        "instances:\n  a:\n    token_env: NOT_SET_ANYWHERE\n  b:\n    token_file: /nonexistent/t\n"
    )
    settings = load_settings(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"instances\.a\.token_env: environment variable"):
        resolve_token("a", settings.instances["a"], {})
    with pytest.raises(ConfigError, match=r"instances\.b\.token_file: cannot read"):
        resolve_token("b", settings.instances["b"], {})


def test_event_name_type_and_tuple_agree() -> None:
    """The Literal type that validates events and the tuple the code uses list the same six."""
    assert get_args(EventName) == EVENT_NAMES
