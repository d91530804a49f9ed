"""The configuration reference documents every key the settings accept; the README and the
docs link only to files and sections that exist, and every alert's runbook link lands on its
section."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from bridge.settings import InstanceSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
         ROOT / "helm" / "ryze-bridge" / "README.md"]  # fmt: skip
RULE_FILES = [ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.yaml",
              ROOT / "helm" / "ryze-bridge" / "files" / "ryze-bridge-rules.yaml"]  # fmt: skip
RUNBOOK_PLACEHOLDER = "https://ryze-bridge.example/docs/runbook.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


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


def anchors(page: Path) -> set[str]:
    """The anchors a Markdown renderer gives ``page``'s headings (GitHub's rule: lower case,
    punctuation but ``-`` and ``_`` dropped, spaces as ``-``)."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken(page: Path, target: str) -> str | None:
    """Why the relative link ``target`` in ``page`` leads nowhere (None: it lands)."""
    path, _, anchor = target.partition("#")
    landing = (page.parent / path).resolve() if path else page
    if not landing.exists():
        return f"{page.relative_to(ROOT)}: {target} (no such file)"
    if anchor and landing.suffix == ".md" and anchor not in anchors(landing):
        return f"{page.relative_to(ROOT)}: {target} (no such section)"
    return None


def test_every_relative_link_of_the_docs_lands() -> None:
    """Each relative link of the README, the changelog, docs/ and the chart's README names a
    file of the repository and, with an anchor, a section of it (pages were moved to docs/)."""
    problems = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            problem = broken(page, target)
            if problem:
                problems.append(problem)
    assert problems == []


def test_every_alert_links_to_its_runbook_section() -> None:
    """Each alert rule has a ``for:`` and an absolute ``runbook_url`` annotation: the documented
    placeholder base (the chart swaps in prometheusRule.runbookBaseUrl) and the anchor of the
    runbook section named after the alert, which exists, in the repository's and the chart's
    copy of the rules."""
    for rules in RULE_FILES:
        groups = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]
        alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
        assert alerts
        for rule in alerts:
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), rule["alert"]
            url = rule["annotations"]["runbook_url"]
            assert url == f"{RUNBOOK_PLACEHOLDER}#{rule['alert'].lower()}"
            relative = url.replace(RUNBOOK_PLACEHOLDER, "docs/runbook.md")
            assert broken(ROOT / "README.md", relative) is None, relative
    comments = [line for line in RULE_FILES[0].read_text().splitlines() if line.startswith("#")]
    assert any(RUNBOOK_PLACEHOLDER in line for line in comments)  # documented where it is used
