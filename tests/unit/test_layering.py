"""The package layering, read from the source: no import cycle, nothing imports upward.

Layers, lowest first. A module belongs to the layer of the longest prefix that names it,
and may import only modules of its own layer or below (imports inside functions count:
a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[tuple[str, ...]] = [
    ("model.common",),  # torch-free, shared by both halves
    ("model",),  # the torch side
    ("app.config",),
    ("app.scaling", "app.observability", "app.audit"),
    ("app.gateway",),  # one replica's request core: no Ray, no routes
    ("app.control",),  # blue/green and registry sync
    ("app.api.errors", "app.api.body"),  # the error shape and body parsing of the edge
    ("app.security", "app.observability.access_log"),  # ASGI middleware and auth
    ("app.api",),  # the FastAPI edge
    ("app.ops",),  # scheduled chores
    ("app.serve",),  # the Serve graph
    ("app.bench", "app.cli"),
]
# app/ may use the torch side only where it runs or builds the predictor.
TORCH_SIDE_USERS = ("app.serve", "app.bench", "app.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "model").rglob("*.py")]:
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps.update(n for n in names if n.split(".")[0] in ("app", "model"))
        graph[_module_name(path)] = deps
    return graph


def _layer(module: str) -> int:
    best, best_len = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


GRAPH = _imports()


def test_every_module_has_a_layer() -> None:
    assert [m for m in GRAPH if m not in ("app", "model") and _layer(m) < 0] == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(GRAPH.items())
        for d in sorted(deps)
        if d not in ("app", "model") and _layer(d) > _layer(m)
    ]
    assert upward == []


def test_only_the_serve_graph_bench_and_cli_reach_the_torch_side() -> None:
    offenders = [
        f"{m} imports {d}"
        for m, deps in sorted(GRAPH.items())
        if m.startswith("app.") and not m.startswith(TORCH_SIDE_USERS)
        for d in deps
        if d.startswith("model") and not d.startswith("model.common")
    ]
    assert offenders == []


def test_model_common_never_imports_the_torch_side() -> None:
    assert [
        (m, d)
        for m, deps in GRAPH.items()
        if m.startswith("model.common")
        for d in deps
        if not d.startswith("model.common")
    ] == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycle_finder_finds_a_cycle_and_only_a_cycle(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert _cycles(graph) == expected


def test_layer_of_the_longest_prefix_wins() -> None:
    assert _layer("app.api.errors") < _layer("app.security.hardening") < _layer("app.api.app")
    assert _layer("app.observability.metrics") < _layer("app.gateway.batcher")
