"""The house's import graph: every ``mycert`` module, function-level imports included.

docs/architecture.md, « Layers »: ``pki/`` and ``mail/`` import nothing of MyCert; the
outbox is a mechanism (no service but the audit trail, no task); views, the admin and
the tasks are entry points that nothing in ``mycert`` imports, except ``mycert.apps``
(which wires the admin) and one declared idiom: a service queues its task after commit
with an import inside the function (``services → tasks``). Imports under
``if TYPE_CHECKING:`` are for the type checker only and are not edges. Beyond that
idiom the graph has no cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mycert"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest ``mycert`` module that ``name`` designates (``a.b.func`` → ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            function = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            names: list[str] = []
            line = getattr(child, "lineno", 0)
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # ``from mycert.x import y``: y may be a module of the package x.
                names = [f"{child.module}.{alias.name}" for alias in child.names]
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    edges.append(Edge(module, target, line, in_function))
            visit(child, function)

    visit(ast.parse(path.read_text()), False)
    return edges


def _graph() -> list[Edge]:
    modules = _modules()
    return [edge for module, path in modules.items() for edge in _edges_of(module, path, modules)]


def _room(module: str) -> str:
    """``mycert.services.issuance`` → ``services``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_queuing_idiom(edge: Edge) -> bool:
    return (
        edge.function_level and _room(edge.source) == "services" and _room(edge.target) == "tasks"
    )


def _cycle(edges: list[Edge]) -> list[str] | None:
    successors: dict[str, set[str]] = {}
    for edge in edges:
        successors.setdefault(edge.source, set()).add(edge.target)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in done:
            return None
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        visiting.append(module)
        for target in sorted(successors.get(module, ())):
            found = visit(target)
            if found:
                return found
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(successors):
        found = visit(module)
        if found:
            return found
    return None


def test_the_graph_sees_function_level_imports() -> None:
    # The queuing idiom exists and is seen: otherwise the checks below would prove nothing.
    assert any(_is_queuing_idiom(edge) for edge in _graph())


def test_no_import_cycle_but_the_declared_queuing_idiom() -> None:
    edges = [edge for edge in _graph() if not _is_queuing_idiom(edge)]
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = [Edge("a", "b", 1, False), Edge("b", "c", 1, True), Edge("c", "a", 1, False)]
    assert _cycle(edges) == ["a", "b", "c", "a"]
    assert _cycle(edges[:2]) is None


@pytest.mark.parametrize("room", ["pki", "mail"])
def test_pure_rooms_import_nothing_of_mycert_but_themselves(room: str) -> None:
    foreign = [
        f"{e.source}:{e.line} → {e.target}"
        for e in _graph()
        if _room(e.source) == room and _room(e.target) != room
    ]
    assert not foreign


def test_the_outbox_imports_no_service_but_audit_and_no_task() -> None:
    foreign = [
        f"{e.source}:{e.line} → {e.target}"
        for e in _graph()
        if _room(e.source) == "outbox"
        and (
            _room(e.target) == "tasks"
            or (_room(e.target) == "services" and e.target != "mycert.services.audit")
        )
    ]
    assert not foreign


@pytest.mark.parametrize("room", ["views", "admin", "tasks"])
def test_entry_points_are_imported_only_by_their_wiring(room: str) -> None:
    # Outside mycert/: config.urls (views), config.settings and config.celery (tasks).
    foreign = [
        f"{e.source}:{e.line} → {e.target}"
        for e in _graph()
        if _room(e.target) == room
        and _room(e.source) != room
        and e.source != "mycert.apps"
        and not _is_queuing_idiom(e)
    ]
    assert not foreign


def test_the_outbox_queues_the_send_task_by_its_registered_name() -> None:
    from mycert.outbox.rows import SEND_TASK_NAME
    from mycert.tasks.delivery import send_delivery

    assert send_delivery.name == SEND_TASK_NAME


# The order of mycert/custody/'s modules (docs/architecture.md, « Custody »): each
# imports only those before it, and nothing of MyCert but pki/.
CUSTODY_ORDER = [
    "errors",
    "files",
    "keys",
    "addresses",
    "loading",
    "responder",
    "ceremonies",
    "creation",
    "deadlines",
    "probe",
]


def test_custody_imports_nothing_of_mycert_but_pki() -> None:
    foreign = [
        f"{e.source}:{e.line} → {e.target}"
        for e in _graph()
        if _room(e.source) == "custody" and _room(e.target) not in {"custody", "pki"}
    ]
    assert not foreign


def test_custody_modules_import_only_those_before_them() -> None:
    modules = {name for name in _modules() if name.startswith("mycert.custody.")}
    assert modules == {f"mycert.custody.{name}" for name in CUSTODY_ORDER}
    rank = {f"mycert.custody.{name}": i for i, name in enumerate(CUSTODY_ORDER)}
    upward = [
        f"{e.source}:{e.line} → {e.target}"
        for e in _graph()
        if e.source in rank and e.target in rank and rank[e.target] >= rank[e.source]
    ]
    assert not upward
