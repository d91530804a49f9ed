"""Settings: the YAML file, overridden by ``RYZE_BRIDGE__SECTION__KEY`` environment variables.

Every model is closed (``extra="forbid"``) so a typo is an error that names the key. Secrets
are ``SecretStr``: they never show in a repr, a log line or an error message. Instance tokens
are *named* here (``token_env`` / ``token_file`` / ``token``) and resolved later, per
instance, so a missing token fails that instance only.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    UrlConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.errors import ConfigError

# The pipeline owns the event names; EVENT_NAMES is re-exported for the modules that read it
# beside their settings (upstream, simulator).
from bridge.pipeline.events import EVENT_NAMES as EVENT_NAMES  # noqa: PLC0414
from bridge.pipeline.events import EventName
from bridge.pipeline.gap import GAP_EVENT
from bridge.pipeline.names import INSTANCE_NAME_PATTERN as INSTANCE_NAME_PATTERN  # noqa: PLC0414
from bridge.pipeline.route import can_fill_to, unseparated

ROUTE_PLACEHOLDERS = frozenset({"instance", "event"})


def no_password_in_url(url: AnyUrl) -> AnyUrl:
    """Passwords belong in ``*_env`` / ``*_file`` keys, where they stay secret."""
    if url.password:
        raise ValueError("the URL must not carry a password; use the *_env or *_file key")
    return url


REDIS_URL_OPTIONS = frozenset({"db"})  # the only query option a Redis URL may carry
OPTION_NAME = re.compile(r"^[a-z_]{1,32}$")


def redis_url_options(url: AnyUrl) -> AnyUrl:
    """A Redis URL's query may only choose the database: any other option (``password``,
    ``ssl_cert_reqs``, …) would bypass a setting that has its own key (a secret in plain text,
    TLS verification switched off). Only the option names are reported, never their values."""
    params = url.query_params()
    names = sorted({option_name(name) for name, _ in params} - REDIS_URL_OPTIONS)
    if names:
        raise ValueError(
            f"the URL takes no query option but db (found: {', '.join(names)}); "
            "use the sink.redis keys (password_env/password_file, ssl_*)"
        )
    databases = [value for name, value in params if name == "db"]
    if len(databases) > 1 or not all(value.isdigit() for value in databases):
        raise ValueError("the URL's db option must be one number")
    if url.fragment is not None:
        raise ValueError("the URL must not carry a fragment (#…)")
    return url


def option_name(name: str) -> str:
    """A query option's name as it may be shown: a plain name, or a placeholder for anything
    else (a name that is not one may be a secret pasted in the query) (pure)."""
    return name if OPTION_NAME.match(name) else "an unreadable option"


HttpUrl = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"]),
    AfterValidator(no_password_in_url),
]
RedisUrl = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["redis", "rediss", "unix"]),
    AfterValidator(no_password_in_url),
    AfterValidator(redis_url_options),
]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Model(BaseModel):
    """Base of every section: closed (an unknown key is an error) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def template_placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders a routing template uses (pure)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str) -> str:
    """Reject templates with unknown, positional or formatted placeholders."""
    try:
        names = template_placeholders(template)
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from None
    unknown = sorted(names - ROUTE_PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in {template!r}; "
            f"allowed: {', '.join(sorted(ROUTE_PLACEHOLDERS))}"
        )
    if "!" in template or ":" in "".join(
        spec for _, _, spec, _ in string.Formatter().parse(template) if spec
    ):
        raise ValueError(f"format specs are not allowed in {template!r}")
    if unseparated(template, kafka_names=False):
        raise ValueError(f"{UNSEPARATED} {template!r}: put '.' between them (or ':' in a stream)")
    return template


def check_kafka_template(template: str) -> str:
    """A topic template's separator must survive Kafka's legal names (``:`` becomes ``_``)."""
    if unseparated(template, kafka_names=True):
        raise ValueError(
            f"{UNSEPARATED} {template!r} once made a legal Kafka name: put '.' between them"
        )
    return template


UNSEPARATED = "{instance} and {event} need a separator no instance name holds in"
RouteTemplate = Annotated[str, Field(min_length=1), AfterValidator(check_template)]
InstanceName = Annotated[str, Field(pattern=INSTANCE_NAME_PATTERN)]
KafkaTemplate = Annotated[RouteTemplate, AfterValidator(check_kafka_template)]


BUFFER_BUDGET_BYTES = 128 * 1024 * 1024  # fits the chart's 768 MiB limit with 5,000 idle sockets


class UpstreamSettings(Model):
    base_url: HttpUrl = AnyUrl("https://ryzeapi.cloud")
    max_frame_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    ca_file: Path | None = None
    request_timeout: PositiveSeconds = 10.0
    open_timeout: PositiveSeconds = 10.0
    watchdog_seconds: PositiveSeconds = 90.0
    backoff_initial: PositiveSeconds = 1.0
    backoff_max: PositiveSeconds = 60.0
    healthy_after: PositiveSeconds = 30.0
    failed_retry_seconds: PositiveSeconds = 300.0
    ensure_interval_seconds: PositiveSeconds = 300.0
    rate_limit_per_minute: int = Field(default=90, gt=0)
    # bytes read off all sockets together and not yet in the spool (docs/operations.md);
    # None: BUFFER_BUDGET_BYTES, or twice max_frame_bytes when that is more
    buffer_budget_bytes: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _budget_holds_a_message(self) -> UpstreamSettings:
        if self.buffer_budget_bytes is not None and self.buffer_budget_bytes < self.largest_read:
            raise ValueError(
                "buffer_budget_bytes must be at least 2 x max_frame_bytes "
                f"({self.largest_read}), the largest message a socket reads"
            )
        return self

    @property
    def largest_read(self) -> int:
        """The largest message read off a socket: twice ``max_frame_bytes`` (an oversized
        frame is still read, to reach the DLQ with its first bytes)."""
        return 2 * self.max_frame_bytes

    @property
    def budget_bytes(self) -> int:
        """The buffered-frames budget in effect."""
        if self.buffer_budget_bytes is not None:
            return self.buffer_budget_bytes
        return max(BUFFER_BUDGET_BYTES, self.largest_read)


class InstanceSettings(Model):
    token_env: str | None = None
    token_file: Path | None = None
    token: SecretStr | None = None
    events: list[EventName] = Field(default_factory=list)
    media_base64: bool = False
    manage_config: bool = True
    important: bool = False  # series of its own under metrics.per_instance: important

    @model_validator(mode="after")
    def _one_token_source(self) -> InstanceSettings:
        given = [n for n in ("token_env", "token_file", "token") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one token source: token_env, token_file or token"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @field_validator("events")
    @classmethod
    def _no_duplicate_events(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("events lists an event twice")
        return events


class FilterSettings(Model):
    drop_events: list[str] = Field(default_factory=list)


class KafkaSinkSettings(Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    # One topic per event, keyed by instance (per-instance order kept by the key); a topic per
    # instance stays available as "ryze.{instance}.{event}" (docs/configuration.md, trade-off).
    topic: KafkaTemplate = "ryze.{event}"
    key: Literal["instance", "chat", "none"] = "instance"
    acks: Literal["all", "1", "0"] = "all"
    compression: Literal["zstd", "gzip", "snappy", "lz4", "none"] = "zstd"
    linger_ms: int = Field(default=5, ge=0, le=1000)
    max_batch_bytes: int = Field(default=1024 * 1024, gt=0)
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    client_id: str = "ryze-bridge"
    create_topics: bool = False
    # A topic the bridge delivered to that is deleted at runtime: its records are retried for
    # this long (it may be being recreated), then dead-lettered as missing_topic. Kept short:
    # the retried records fill the sink worker's in-flight window meanwhile.
    vanished_topic_grace_seconds: float = Field(default=60.0, ge=0, le=3600)
    cloudevents: Literal["none", "binary"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSinkSettings:
        if self.security_protocol.startswith("SASL_") and (
            self.sasl_username is None
            or (self.sasl_password_env is None) == (self.sasl_password_file is None)
        ):
            raise ValueError(
                f"{self.security_protocol} needs sasl_username and one of "
                "sasl_password_env or sasl_password_file"
            )
        return self

    topic_partitions: int = Field(default=3, gt=0)
    topic_replication: int = Field(default=1, gt=0)

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class RedisSinkSettings(Model):
    url: RedisUrl = AnyUrl("redis://127.0.0.1:6379/0")
    stream: RouteTemplate = "ryze:{event}"  # one stream per event (docs/configuration.md)
    maxlen: int | None = Field(default=1_000_000, gt=0, le=2**63 - 1)  # Redis: a 64-bit int
    max_entry_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    cloudevents: Literal["none", "binary"] = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ssl_ca_file: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class FileSinkSettings(Model):
    path: Path = Path("./events.jsonl")


class SinkSettings(Model):
    kind: Literal["kafka", "redis", "file"] = "kafka"
    kafka: KafkaSinkSettings = Field(default_factory=KafkaSinkSettings)
    redis: RedisSinkSettings = Field(default_factory=RedisSinkSettings)
    file: FileSinkSettings = Field(default_factory=FileSinkSettings)
    dlq: str = Field(default="ryze.dlq", min_length=1)
    gap_markers: bool = True
    batch_max_records: int = Field(default=1000, gt=0)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_in_flight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    separate_process: bool = True
    retry_initial: PositiveSeconds = 0.2
    retry_max: PositiveSeconds = 10.0


class SpoolSettings(Model):
    dir: Path = Path("/var/lib/ryze-bridge/spool")
    max_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    when_full: Literal["drop_newest", "drop_oldest"] = "drop_newest"
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: int = Field(default=50, gt=0)


class DiscoverySettings(Model):
    """List the account's instances with a TokenAccount and run every one that matches."""

    token_env: str | None = None
    token_file: Path | None = None
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    refresh_seconds: PositiveSeconds = 60.0
    events: list[EventName] = Field(default_factory=list)
    media_base64: bool = False
    manage_config: bool = True
    # names with series of their own; each an instance name (a config typo is named)
    important: list[InstanceName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_token_source(self) -> DiscoverySettings:
        given = [n for n in ("token_env", "token_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one account token source: token_env or token_file")
        return self

    def instance(self, name: str) -> InstanceSettings:
        """The settings a discovered instance runs with (the account token for everything)."""
        return InstanceSettings(
            token_env=self.token_env,
            token_file=self.token_file,
            events=self.events,
            media_base64=self.media_base64,
            manage_config=self.manage_config,
            important=name in self.important,
        )


class AdminSettings(Model):
    host: str = "127.0.0.1"  # loopback; elsewhere without a token is logged at start
    port: int = Field(default=9464, ge=0, le=65535)
    max_connections: int = Field(default=256, ge=1, le=65535)
    header_timeout_seconds: PositiveSeconds = 5.0
    token_env: str | None = None
    token_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    ready_min_connected_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    ready_max_silence_seconds: PositiveSeconds = 75.0

    @model_validator(mode="after")
    def _cert_and_key(self) -> AdminSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self


class MetricsSettings(Model):
    """Which instances get series of their own (``ryze_instance="<name>"``); every other one
    is counted under ``ryze_instance="_other"``: ``important`` (those marked important),
    ``all`` (a few hundred instances at most), ``none``."""

    per_instance: Literal["important", "all", "none"] = "important"


class ReloadSettings(Model):
    watch: bool = True
    poll_seconds: PositiveSeconds = 2.0


class LogSettings(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ClusterSettings(Model):
    """How replicas share the instances: each instance belongs to one of ``shards`` shards
    (stable hash of its name) and a replica runs the instances of the shards it owns."""

    mode: Literal["none", "kafka", "redis", "static"] = "none"
    shards: int = Field(default=64, ge=1, le=4096)
    group: str = Field(default="ryze-bridge", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    replica_id: str | None = Field(default=None, min_length=1)
    topic: str = Field(default="ryze-bridge.cluster", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=2_000, ge=100)
    lease_ttl_ms: int = Field(default=10_000, ge=1000)
    index: int | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=1)
    ready_requires_shards: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.index is not None and self.count is not None and self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        if self.mode == "static" and self.count is None:
            raise ValueError("static mode needs count (index defaults to the pod ordinal)")
        return self


KEYED_MESSAGE = re.compile(r"^[a-z_]+(\.[a-z_]+)+: ")  # "sink.redis.url: …"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine (where the simulator and the tests run) (pure)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:  # not *.localhost: a resolver may send that to DNS
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dlq_route_problem(sink: SinkSettings) -> str | None:
    """Why the sink's template could fill a documented event (or the gap markers) into the
    DLQ destination, or None (pure)."""
    kafka = sink.kind != "redis"
    key = "sink.kafka.topic" if kafka else "sink.redis.stream"
    template = sink.kafka.topic if kafka else sink.redis.stream
    for event in (*EVENT_NAMES, GAP_EVENT):
        if can_fill_to(template, sink.dlq, event, kafka_names=sink.kind == "kafka"):
            return (
                f"{key}: {template!r} fills event {event!r} into the DLQ {sink.dlq!r}; "
                "give sink.dlq a name the template cannot make"
            )
    return None


def kafka_hosts(bootstrap_servers: str) -> list[str]:
    """The host names of a ``host:port,host:port`` list (pure)."""
    hosts = []
    for entry in bootstrap_servers.split(","):
        server = entry.strip()
        host = server.rsplit(":", 1)[0] if server.count(":") == 1 else server.rsplit("]", 1)[0]
        hosts.append(host.strip("[]"))
    return hosts


def ignored_important(settings: Settings) -> list[str]:
    """The instances marked important (``important: true`` or in ``discovery.important``)
    while ``metrics.per_instance`` is not ``important``: the mark does nothing then (pure)."""
    if settings.metrics.per_instance == "important":
        return []
    marked = [name for name, instance in settings.instances.items() if instance.important]
    discovery = settings.discovery
    return sorted({*marked, *(discovery.important if discovery is not None else [])})


def insecure_choices(settings: Settings) -> list[str]:
    """Each choice that sends a secret in clear or skips a check, towards a host that is not
    this machine, as ``key: why`` (pure). Loopback stays allowed: nothing leaves the host."""
    found = []
    base = settings.upstream.base_url
    if base.scheme == "http" and not is_loopback(base.host):
        found.append("upstream.base_url: plain http sends every instance token in clear")
    sink = settings.sink
    if sink.kind == "kafka":
        kafka = sink.kafka
        remote = not all(is_loopback(h) for h in kafka_hosts(kafka.bootstrap_servers))
        if (
            remote
            and kafka.security_protocol == "SASL_PLAINTEXT"
            and kafka.sasl_mechanism == "PLAIN"
        ):
            found.append(
                "sink.kafka.security_protocol: SASL PLAIN without TLS sends the password in clear"
            )
        if (
            remote
            and kafka.security_protocol in ("SSL", "SASL_SSL")
            and not kafka.ssl_check_hostname
        ):
            found.append("sink.kafka.ssl_check_hostname: false accepts any broker's certificate")
    if sink.kind == "redis":
        redis = sink.redis
        has_password = redis.password_env is not None or redis.password_file is not None
        if has_password and redis.url.scheme == "redis" and not is_loopback(redis.url.host):
            found.append("sink.redis.url: a password over redis:// (no TLS) travels in clear")
    return found


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="RYZE_BRIDGE__",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    instances: dict[InstanceName, InstanceSettings] = Field(default_factory=dict)
    discovery: DiscoverySettings | None = None
    filter: FilterSettings = Field(default_factory=FilterSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    shutdown_timeout: PositiveSeconds = 25.0
    admin: AdminSettings = Field(default_factory=AdminSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    reload: ReloadSettings = Field(default_factory=ReloadSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    allow_insecure: bool = False  # accept the choices insecure_choices() names (logged at start)

    @model_validator(mode="after")
    def _secure_unless_allowed(self) -> Settings:
        insecure = insecure_choices(self)
        if insecure and not self.allow_insecure:
            raise ValueError(
                "; ".join(insecure) + " — use TLS (https, SASL_SSL, rediss://), or set "
                "allow_insecure: true to accept it (logged at every start)"
            )
        return self

    @model_validator(mode="after")
    def _dlq_is_no_route(self) -> Settings:
        problem = dlq_route_problem(self.sink)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _cluster_rides_on_the_sink(self) -> Settings:
        mode = self.cluster.mode
        if mode in ("kafka", "redis") and self.sink.kind != mode:
            raise ValueError(
                f"cluster.mode {mode} coordinates through the {mode} sink; set sink.kind: {mode}"
            )
        return self


class _MappingSource(PydanticBaseSettingsSource):
    """A settings source that hands pydantic-settings an already parsed mapping."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse the config file; every failure is a :class:`ConfigError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {yaml_problem(exc)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data


QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")  # what PyYAML quotes from the text (an alias, a tag)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, with its line and column, and never the text itself
    (the parser's own message quotes the offending line, which may hold a token) (pure)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts = [QUOTED.sub("'…'", part) for part in (exc.context, exc.problem) if part]
    text = ", ".join(parts) or "a syntax error"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return text
    return f"line {mark.line + 1}, column {mark.column + 1}: {text}"


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem, each naming the dotted key (pure)."""
    lines = []
    for error in exc.errors(include_url=False):
        key = dotted_key(error["loc"])
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch" and INSTANCE_NAME_PATTERN in message:
            message = INSTANCE_NAME_RULE
        elif error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "literal_error" and isinstance(error.get("input"), str):
            message = f"{error['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        if key == "(top)" and KEYED_MESSAGE.match(message):  # a whole-config check names its key
            lines.append(message)
            continue
        lines.append(f"{key}: {message}")
    return lines


INSTANCE_NAME_RULE = (
    f"not an instance name: it must match {INSTANCE_NAME_PATTERN} (letters, digits, _ and -; "
    "no '.' or ':', the separators of topic and stream names)"
)
PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted_key(location: tuple[int | str, ...]) -> str:
    """An error's location as ``a.b.c``; a key that is not a plain word is quoted, so
    ``instances['shop.main']`` reads as one key (pure)."""
    text = ""
    for part in location:
        if _is_noise(part):
            continue
        if isinstance(part, str) and not PLAIN_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top)"


def _is_noise(part: int | str) -> bool:
    """Pydantic adds union and validator names to error locations; keep only real keys."""
    return isinstance(part, str) and (part.startswith("function-") or part == "[key]")


def load_settings(path: Path | None) -> Settings:
    """Build the settings from ``path`` (optional), overridden by ``RYZE_BRIDGE__*`` variables."""
    data = read_yaml(path) if path is not None else {}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _MappingSource(settings_cls, data))

    try:
        loaded = _Loaded()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    return Settings.model_construct(**dict(loaded))


def read_secret(
    key: str, env: str | None, file: Path | None, environ: Mapping[str, str]
) -> SecretStr | None:
    """A secret from an environment variable or a file; None when neither is named. A named
    source that is unset, unreadable or empty is a ConfigError naming ``key``."""
    if env is not None:
        value = environ.get(env, "").strip()
        if not value:
            raise ConfigError([f"{key}_env: environment variable {env} is not set"])
        return SecretStr(value)
    if file is None:
        return None
    try:
        value = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{key}_file: cannot read {file}: {exc.strerror}"]) from None
    if not value:
        raise ConfigError([f"{key}_file: {file} is empty"])
    return SecretStr(value)


def resolve_token(name: str, instance: InstanceSettings, environ: Mapping[str, str]) -> SecretStr:
    """The instance's token from its one source; a missing one is a ConfigError naming the key."""
    if instance.token is not None:
        return instance.token
    token = read_secret(f"instances.{name}.token", instance.token_env, instance.token_file, environ)
    if token is None:  # unreachable: InstanceSettings requires one source
        raise ConfigError([f"instances.{name}: no token source"])
    return token


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, every secret replaced by ``**********``."""
    return settings.model_dump(mode="json")
