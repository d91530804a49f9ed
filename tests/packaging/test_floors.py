"""Dependency floors stay past the releases with known security fixes: an install that takes
the lowest versions the project allows never gets a library with a fixed hole."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.packaging.tools import PYPROJECT

# the first release with the fix, and why
SECURITY_FLOORS = {
    "aiohttp": ("3.12.14", "HTTP request smuggling in its pure-Python parser, fixed in 3.12.14"),
    "redis": ("6.0", "rediss:// did not check the server's host name before 6.0"),
}


def lowest_allowed(requirement: Requirement) -> Version | None:
    """The lowest version ``requirement`` admits by a ``>=`` bound (None: unbounded)."""
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(floors) if floors else None


def test_dependency_floors_are_past_known_security_fixes() -> None:
    """Each listed dependency has a ``>=`` floor at or past the release that fixed it."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    found = {Requirement(d).name: Requirement(d) for d in project["dependencies"]}
    for name, (fixed, why) in SECURITY_FLOORS.items():
        floor = lowest_allowed(found[name])
        assert floor is not None, f"{name}: no floor ({why})"
        assert floor >= Version(fixed), f"{name} >= {floor} allows versions before {fixed}: {why}"
