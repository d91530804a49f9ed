"""The REST client's async-library probe costs no import search: httpcore asks sniffio which
library runs at every lock and event it makes, and without sniffio installed each of those is
a failed import, a search of sys.path on the readers' event loop (the bench's stall sampler
found it holding the loop during the fleet's config checks)."""

from __future__ import annotations

import sys

from httpcore._synchronization import current_async_library


async def test_the_async_library_is_found_without_an_import_search() -> None:
    """Under the running loop httpcore names asyncio through sniffio, which is installed and
    imported once: a later probe finds it in ``sys.modules``."""
    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules
