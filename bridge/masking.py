"""Finding every registered secret in a text in one pass, however many there are.

A process may know thousands of secrets (one token per instance, and every token an
instance's frames carried). Scanning a log line once per secret costs milliseconds at 5,000;
an Aho-Corasick automaton (``ahocorasick-rs``: Rust, maintained, wheels for CPython 3.11 to
3.14 on Linux x86_64 and aarch64) finds them all in one pass over the text. The automaton is
rebuilt lazily: a secret registered since the last build waits in a short pending list,
checked one by one, until ``PENDING_MAX`` of them wait or ``REBUILD_SECONDS`` went by. They
are then built into a new tier, merged with the tiers before it while those are no more than
twice its size: tiers shrink geometrically (a few automata), and a secret is rebuilt only when
its tier grows 1.5x or more, so registering n secrets costs O(n log n) building, not O(n²).
Every tier is one more pass over each text (5,000 tokens in four tiers: 7.3 µs a frame of
600 bytes; in one: 1.7 µs), yet the tiers are not merged into one once the index settles: a
build holds the GIL for its whole length (20-80 ms for 5,000-10,000 random tokens), a stall of
every socket reader, paid again at each token learned later.
Secrets learned from data (an upstream's tokens, not configured ones) are capped at
``LEARNED_CAP`` per index; past it they are refused and counted.

The automaton that decides whether a text holds a secret finds leftmost-longest matches (its
prefilter skips ahead: ~10 times faster than reporting every match); a text that holds one is
masked through a second, standard automaton built at the first such text, which reports
overlapping matches: where two secrets overlap, the union is masked.
The same index works on text (the logs) and on bytes (the pipeline's fleet-wide token check,
``bridge.pipeline.tokens``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import ahocorasick_rs

S = TypeVar("S", str, bytes)
S_contra = TypeVar("S_contra", str, bytes, contravariant=True)
MASK = "***"
FAST = ahocorasick_rs.MatchKind.LeftmostLongest
MIN_SECRET_LENGTH = 4
PENDING_MAX = 64
LEARNED_CAP = 16_384  # secrets learned from data (not configured) a process registers
REBUILD_SECONDS = 1.0


def mask_text(text: str, secrets: Iterable[str], mask: str = MASK) -> str:
    """``text`` with every occurrence of every secret replaced by ``mask``, longest first (a
    secret inside a longer one cannot leave the longer one's rest behind) (pure)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, mask)
    return text


class Automaton(Protocol[S_contra]):
    """``ahocorasick_rs.AhoCorasick`` (texts) or ``BytesAhoCorasick`` (bytes)."""

    def find_matches_as_indexes(
        self, haystack: S_contra, overlapping: bool = False
    ) -> list[tuple[int, int, int]]: ...


@dataclass(slots=True)
class Tier(Generic[S]):
    """Secrets built into one automaton (leftmost-longest: its prefilter skips most of a text),
    and the standard one that reports overlapping matches, built at the first hit."""

    secrets: tuple[S, ...]
    automaton: Automaton[S]
    overlapping: Automaton[S] | None = None


@dataclass(frozen=True, slots=True)
class Matcher(Generic[S]):
    """A snapshot of the secrets: a few tiers of built ones (sizes shrinking geometrically),
    and those pending."""

    tiers: tuple[Tier[S], ...]
    pending: tuple[S, ...]
    mask_with: S

    @property
    def empty(self) -> bool:
        return not self.tiers and not self.pending

    def finds(self, text: S) -> bool:
        """Whether any secret occurs in ``text``."""
        for tier in self.tiers:  # (a loop: a generator's frame costs more than a tier's pass)
            if tier.automaton.find_matches_as_indexes(text):
                return True
        return bool(self.pending) and any(secret in text for secret in self.pending)

    def spans(self, text: S) -> list[tuple[int, int]]:
        """Where secrets stand in ``text``, overlapping ones merged, in order."""
        found: list[tuple[int, int]] = []
        for tier in self.tiers:
            if not tier.automaton.find_matches_as_indexes(text):
                continue
            if tier.overlapping is None:
                tier.overlapping = _automaton(list(tier.secrets), self.mask_with, True)
            matches = tier.overlapping.find_matches_as_indexes(text, overlapping=True)
            found += [(start, end) for _, start, end in matches]
        for secret in self.pending:
            start = text.find(secret)
            while start >= 0:
                found.append((start, start + len(secret)))
                start = text.find(secret, start + 1)
        return merged(found)

    def mask(self, text: S) -> S:
        """``text`` with every secret masked."""
        spans = self.spans(text)
        if not spans:
            return text
        parts: list[S] = []
        at = 0
        for start, end in spans:
            parts += (text[at:start], self.mask_with)
            at = end
        parts.append(text[at:])
        return text[:0].join(parts)


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, those that overlap or touch joined (pure)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class SecretIndex(Generic[S]):
    """Registered secrets (texts, or bytes: ``mask_with`` says which); :meth:`matcher` is a
    consistent snapshot."""

    def __init__(
        self,
        mask_with: S,
        clock: Callable[[], float] = time.monotonic,
        learned_cap: int = LEARNED_CAP,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._known: set[S] = set()
        self._pending: list[S] = []
        self._built_at = clock()
        self._matcher: Matcher[S] = Matcher((), (), mask_with)
        self.learned_cap = learned_cap
        self.learned = 0  # secrets learned from data (not configured) admitted
        self.refused = 0  # and refused past ``learned_cap``
        self.builds = 0  # automata built
        self.built_secrets = 0  # secrets fed to them, all builds together

    def add(self, secret: S) -> None:
        """Register ``secret`` (shorter than ``MIN_SECRET_LENGTH``: ignored)."""
        if len(secret) < MIN_SECRET_LENGTH or secret in self._known:
            return
        with self._lock:
            if secret in self._known:
                return
            self._known.add(secret)
            self._pending.append(secret)
            old = self._matcher
            self._matcher = Matcher(old.tiers, tuple(self._pending), old.mask_with)

    def add_all(self, secrets: Iterable[S]) -> None:
        for secret in secrets:
            self.add(secret)

    def learn(self, secrets: Iterable[S]) -> bool:
        """Register the spellings of one secret learned from data (not configured); past
        ``learned_cap`` of them in the index's life, refused (counted in ``refused``)."""
        with self._lock:
            if self.learned >= self.learned_cap:
                self.refused += 1
                return False
            self.learned += 1
        self.add_all(secrets)
        return True

    def matcher(self) -> Matcher[S]:
        """The current snapshot, the automaton rebuilt first when enough is pending."""
        matcher = self._matcher
        if matcher.pending and (
            len(matcher.pending) >= PENDING_MAX or self._clock() - self._built_at >= REBUILD_SECONDS
        ):
            self._rebuild()
            matcher = self._matcher
        return matcher

    def _rebuild(self) -> None:
        with self._lock:
            if not self._pending:
                return
            tiers: list[Tier[S]] = list(self._matcher.tiers)
            batch: list[S] = self._pending
            self._pending = []
            while tiers and len(tiers[-1].secrets) <= 2 * len(batch):
                batch = list(tiers.pop().secrets) + batch  # (its secrets' tier grows 1.5x+)
            mask_with = self._matcher.mask_with
            tiers.append(Tier(tuple(batch), _automaton(batch, mask_with)))
            self._matcher = Matcher(tuple(tiers), (), mask_with)
            self._built_at = self._clock()
            self.builds += 1
            self.built_secrets += len(batch)


def _automaton(secrets: list[S], mask_with: S, overlapping: bool = False) -> Automaton[S]:
    """An automaton over ``secrets``: leftmost-longest (fast: it may skip ahead with a
    prefilter), or standard (slower: every match, overlapping ones too, for masking)."""
    kind = ahocorasick_rs.MatchKind.Standard if overlapping else FAST
    if isinstance(mask_with, bytes):
        return ahocorasick_rs.BytesAhoCorasick(secrets, matchkind=kind)
    return ahocorasick_rs.AhoCorasick(secrets, matchkind=kind)
