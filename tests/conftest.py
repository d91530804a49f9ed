"""Shared pytest configuration: the real-services fixtures live in ``tests/services.py``."""

import gc
import inspect
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.services"]


@pytest.fixture(autouse=True)
def _leaks_found_by_their_own_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each coroutine test, once its event loop is closed, collect the garbage: a socket
    or transport it left open then warns (an error, by the settings) in that test's teardown,
    instead of in whichever later test the collector happens to run during."""
    yield
    if inspect.iscoroutinefunction(request.function):
        gc.collect()
