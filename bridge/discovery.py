"""Discovery: the instances of an account, listed with its TokenAccount, become runners.

Every ``refresh_seconds`` the account is listed (one request, retried within the REST budget;
a listing that still fails is tried again after the retry policy's backoff, at most
``refresh_seconds``, instead of a whole period later); names are matched against the
include/exclude globs; explicit ``instances:`` entries override discovered ones. The list
answer carries each instance's WebSocket config, so a new runner's first ensure spends no
GET. All calls and upgrades share the account token's bucket; the expected time to connect
what is new is logged and exported.

A listed name is data from the upstream: one that is not a valid instance name (names.py: no
``.`` or ``:``, the routing separators) is skipped, counted
(``discovery_skipped_total{reason="invalid_name"}``) and logged through the masking logger
when a listing first shows it, and never stops the others from running.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Awaitable, Callable, Mapping

from bridge.errors import ConfigError, UpstreamError
from bridge.logs import get_logger, register_secret
from bridge.metrics import Metrics
from bridge.pipeline.names import is_valid_instance
from bridge.retry import RetryPolicy
from bridge.settings import DiscoverySettings, InstanceSettings, read_secret
from bridge.upstream.ratelimit import BucketRegistry
from bridge.upstream.rest import ListedInstance, RestClient, WsConfig, same_config
from bridge.upstream.rest import desired_config as desired_ws

log = get_logger(__name__)
Apply = Callable[[dict[str, InstanceSettings], dict[str, WsConfig | None]], Awaitable[int]]


def selected(name: str, include: list[str], exclude: list[str]) -> bool:
    """Whether ``name`` matches an include glob and no exclude glob (pure)."""
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def valid_names(listed: list[ListedInstance]) -> tuple[list[ListedInstance], list[str]]:
    """The listed instances whose name is a valid instance name, and the names that are not
    (pure)."""
    valid = [i for i in listed if is_valid_instance(i.name)]
    return valid, [i.name for i in listed if not is_valid_instance(i.name)]


def shown_name(name: str) -> str:
    """A refused name as logged: quoted, cut to 80 characters (it may be anything) (pure)."""
    return repr(name[:80]) + ("…" if len(name) > 80 else "")


def requests_needed(listed: list[ListedInstance], settings: DiscoverySettings) -> int:
    """Requests the new instances will spend: one upgrade each, plus a POST where the listed
    config is not the desired one (pure)."""
    desired = desired_ws(list(settings.events), settings.media_base64)
    return sum(1 + (0 if same_config(i.websocket, desired) else 1) for i in listed)


def relist_policy(refresh_seconds: float) -> RetryPolicy:
    """The backoff between failed listings: from a second up to the refresh period (pure)."""
    return RetryPolicy(min(1.0, refresh_seconds), refresh_seconds)


def connect_eta(requests: int, per_minute: float, burst: float) -> float:
    """Seconds the request budget needs to let ``requests`` through (pure)."""
    return max(0.0, requests - burst) * 60.0 / per_minute


class Discovery:
    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        explicit: Mapping[str, InstanceSettings],
        rest_factory: Callable[..., RestClient],
        buckets: BucketRegistry,
        metrics: Metrics,
        environ: Mapping[str, str],
        apply: Apply,
    ) -> None:
        self.settings = settings
        self.explicit = dict(explicit)
        self.rest_factory = rest_factory
        self.buckets = buckets
        self.metrics = metrics
        self.environ = environ
        self.apply = apply
        self.running: set[str] = set()
        self.refused: set[str] = set()  # invalid names of the last listing (reported once)
        metrics.discovery_skipped.labels("invalid_name")  # at zero from the start

    async def run(self) -> None:
        failures = relist_policy(self.settings.refresh_seconds).start()
        while True:
            if await self.refresh():
                failures.reset()
                await asyncio.sleep(self.settings.refresh_seconds)
            else:
                await asyncio.sleep(failures.next_delay(time.monotonic()))

    async def refresh(self) -> bool:
        """List the account once and hand the wanted set of instances to the fleet;
        False when the listing failed (nothing changed)."""
        try:
            token = read_secret(
                "discovery.token", self.settings.token_env, self.settings.token_file, self.environ
            )
            if token is None:
                return False
            register_secret(token.get_secret_value())
            bucket = self.buckets.for_token(token)
            rest = self.rest_factory(token, bucket)
            listed = await rest.with_retries(rest.list_instances)
        except (ConfigError, UpstreamError) as exc:
            self.metrics.discovery_runs.labels("error").inc()
            log.error("discovery.failed", error=str(exc))
            return False
        wanted = [
            i
            for i in self.valid(listed)
            if selected(i.name, self.settings.include, self.settings.exclude)
        ]
        desired = {i.name: self.settings.instance(i.name) for i in wanted}
        desired.update(self.explicit)
        known = {i.name: i.websocket for i in wanted}
        fresh = [i for i in wanted if i.name not in self.running and i.name not in self.explicit]
        self.metrics.discovery_runs.labels("ok").inc()
        if fresh:
            needed = requests_needed(fresh, self.settings)
            eta = connect_eta(needed, bucket.per_minute, bucket.burst)
            self.metrics.discovery_eta.set(eta)
            log.info("discovery.scheduled", new=len(fresh), total=len(desired), eta_seconds=eta)
        await self.apply(desired, known)
        self.running = set(desired)
        return True

    def valid(self, listed: list[ListedInstance]) -> list[ListedInstance]:
        """The listed instances with a valid name; each other one is counted and logged when
        a listing first shows it (not again at every refresh while it stays listed)."""
        valid, refused = valid_names(listed)
        for name in refused:
            if name not in self.refused:
                self.metrics.discovery_skipped.labels("invalid_name").inc()
                log.warning("discovery.skipped", reason="invalid_name", name=shown_name(name))
        self.refused = set(refused)
        return valid
