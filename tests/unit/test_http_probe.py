"""The REST client's async-library probe costs no import search: httpcore asks sniffio which
library runs at every lock and event it makes, and without sniffio installed each of those is
a failed import, a search of sys.path on the readers' event loop (the bench's stall sampler
found it holding the loop during the fleet's config checks)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest
from httpcore._synchronization import current_async_library


class Asked:
    """A finder first in ``sys.meta_path`` that notes every module searched for, finds none."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(name)
        return None


async def test_the_async_library_is_named_without_an_import_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once warm, httpcore's probe under the running loop names asyncio without searching for
    any module (sniffio is installed and stays imported)."""
    assert current_async_library() == "asyncio"  # warm: sniffio imported once
    asked = Asked()
    monkeypatch.setattr(sys, "meta_path", [asked, *sys.meta_path])
    for _ in range(3):
        assert current_async_library() == "asyncio"
    assert asked.names == []
