"""The configuration reference documents every key the settings accept."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bridge.settings import InstanceSettings, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def keys_of(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= keys_of(annotation)
    return keys


def test_every_setting_is_documented() -> None:
    """Each key of every section (and of an instance) appears in docs/configuration.md."""
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(
        k for k in keys_of(Settings) | keys_of(InstanceSettings) if f"`{k}`" not in text
    )
    assert missing == []
