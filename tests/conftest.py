"""Shared pytest configuration: the real-services fixtures live in ``tests/services.py``."""

pytest_plugins = ["tests.services"]
