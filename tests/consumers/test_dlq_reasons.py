"""The DLQ reasons the code can produce are exactly those the DLQ record schema lists, those
docs/events.md explains and those the metrics create at zero: collected from the source of
bridge/ (every reason handed to ``Rejected``, ``DecodeError`` or a dead-letter function), not
from a copied list, so a new reason cannot reach consumers undocumented."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.metrics import DLQ_REASONS

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"
SCHEMA = ROOT / "docs" / "schema" / "dlq-record.schema.json"
EVENTS_DOC = ROOT / "docs" / "events.md"

# What carries a DLQ reason, and the position of the reason among its arguments.
CARRIERS = {"Rejected": 0, "DecodeError": 0, "dead_letter": 1, "as_dead_letter": 1}
# ``x.reason`` handed on is a reason some carrier above was given: collected there.
FORWARDED = "reason"


@dataclass(frozen=True)
class Site:
    """One place a reason is handed to a carrier: ``reasons`` it can be, or ``unresolved``."""

    where: str
    reasons: frozenset[str]
    unresolved: bool = False


def callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def literals(node: ast.expr) -> frozenset[str] | None:
    """The strings an expression of constants can be (``a if c else b`` included); None if
    it is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return frozenset({node.value})
    if isinstance(node, ast.IfExp):
        body, orelse = literals(node.body), literals(node.orelse)
        return None if body is None or orelse is None else body | orelse
    return None


def module_dicts(tree: ast.Module) -> dict[str, ast.Dict]:
    """Module-level ``NAME = {...}`` and ``NAME: T = {...}`` dicts."""
    found: dict[str, ast.Dict] = {}
    for node in tree.body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            found[target.id] = value
    return found


def bindings(scope: ast.AST, name: str, dicts: dict[str, ast.Dict]) -> frozenset[str] | None:
    """The strings a local ``name`` is bound to in ``scope``: assignments of constants, or a
    loop over a module-level dict's ``.items()`` (the value) or ``.values()``."""
    found: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            values = literals(node.value)
            if values is None:
                return None
            found |= values
        elif isinstance(node, ast.For):
            values = loop_values(node, name, dicts)
            if values is not None:
                found |= values
    return frozenset(found) if found else None


def loop_values(loop: ast.For, name: str, dicts: dict[str, ast.Dict]) -> frozenset[str] | None:
    iterated = loop.iter
    if not (
        isinstance(iterated, ast.Call)
        and isinstance(iterated.func, ast.Attribute)
        and isinstance(iterated.func.value, ast.Name)
        and iterated.func.value.id in dicts
    ):
        return None
    target = loop.target
    if iterated.func.attr == "items" and isinstance(target, ast.Tuple):
        bound = target.elts[1]
    elif iterated.func.attr == "values":
        bound = target
    else:
        return None
    if not (isinstance(bound, ast.Name) and bound.id == name):
        return None
    values = [literals(v) for v in dicts[iterated.func.value.id].values]
    if any(v is None for v in values):
        return None
    return frozenset().union(*(v for v in values if v is not None))


def reason_argument(call: ast.Call, position: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "reason":
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def sites(path: Path) -> Iterator[Site]:
    """Every call of a carrier in the file ``path`` and the reasons it can be given."""
    return sites_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def sites_in(source: str, name: str) -> Iterator[Site]:
    """Every call of a carrier in ``source`` and the reasons it can be given."""
    tree = ast.parse(source)
    dicts = module_dicts(tree)
    owner: dict[int, ast.AST] = {}  # node -> its innermost function (ast.walk: outer first)
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            owner.update((id(node), function) for node in ast.walk(function))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or callee(node) not in CARRIERS:
            continue
        where = f"{name}:{node.lineno}"
        argument = reason_argument(node, CARRIERS[callee(node)])
        if isinstance(argument, ast.Attribute) and argument.attr == FORWARDED:
            continue
        values = None if argument is None else literals(argument)
        if values is None and isinstance(argument, ast.Name):
            values = bindings(owner.get(id(node), tree), argument.id, dicts)
        yield Site(where, values or frozenset(), unresolved=values is None)


def produced() -> tuple[frozenset[str], list[Site]]:
    """Every DLQ reason the code of bridge/ can produce, and the sites it comes from."""
    found = [site for path in sorted(BRIDGE.rglob("*.py")) for site in sites(path)]
    return frozenset().union(*(site.reasons for site in found)), found


def schema_reasons() -> frozenset[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return frozenset(schema["properties"]["reason"]["enum"])


def documented_reasons() -> frozenset[str]:
    """The reasons in the first column of the table under "## Dead letters"."""
    section = EVENTS_DOC.read_text(encoding="utf-8").split("## Dead letters", 1)[1]
    section = section.split("\n## ", 1)[0]
    reasons: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            reasons.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return frozenset(reasons)


def test_every_reason_site_in_the_code_is_understood() -> None:
    """Each place that hands a reason to Rejected, DecodeError or a dead-letter function gives
    a literal, a choice of literals, a local bound to literals or a constant dict's values
    (so nothing escapes the collection), and the known sites are all found."""
    _, found = produced()
    assert [site.where for site in found if site.unresolved] == []
    assert len(found) >= 10, [site.where for site in found]


def test_the_reasons_the_code_produces_are_the_schemas_the_docs_and_the_metrics() -> None:
    """The set of DLQ reasons the code can produce equals the DLQ record schema's enum, the
    reasons docs/events.md explains, and the reasons the DLQ counter is created with."""
    reasons, _ = produced()
    assert "fenced" in reasons  # the Redis sink's fencing: the reason that went undocumented
    assert reasons == schema_reasons()
    assert reasons == documented_reasons()
    assert reasons == frozenset(DLQ_REASONS)


def test_the_collection_sees_a_new_reason() -> None:
    """A reason added in a new call, in a conditional, or in a constant dict is collected (the
    scan would not miss one a developer adds), and one computed at runtime is flagged."""
    source = """
PERMANENT = {KeyError: "from_dict"}
def f(error, text, flag):
    Rejected("plain", text)
    DecodeError("maybe" if flag else "other", text)
    for kind, reason in PERMANENT.items():
        return Rejected(reason, text)
    chosen = "bound"
    self.dead_letter(frame, chosen, text)
    self.dead_letter(frame, exc.reason, text)
    return Rejected(text.upper(), text)
"""
    tree_sites = list(sites_in(source, "probe.py"))
    reasons = frozenset().union(*(s.reasons for s in tree_sites))
    assert reasons == {"from_dict", "plain", "maybe", "other", "bound"}
    assert [s.unresolved for s in tree_sites].count(True) == 1
