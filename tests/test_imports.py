"""No import cycles under src/: the module graph of every import statement (function-level ones
included) of every package, read with `ast` without importing anything, has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """{module: modules under ``src`` it imports}; ``from pkg import name`` points at the
    submodule ``pkg.name`` when there is one, else at ``pkg``. Importing ``a.b`` also runs
    ``a/__init__``; that implicit parent edge is left out (packages re-export their parts)."""
    paths = {_module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".strip(".")
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t in paths and t != name}
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_graph_sees_the_packages_and_their_imports() -> None:
    graph = import_graph()
    assert {"commonio.atomic", "layercard.cli", "neuraltpp.cli", "neuraltpp.data"} <= set(graph)
    assert "commonio.atomic" in graph["commonio.wheels"]
    assert "neuraltpp.data.containers" in graph["neuraltpp.data.splits"]
    assert not any(m.startswith(("neuraltpp", "layercard")) for m in graph["commonio.wheels"])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_under_src() -> None:
    assert find_cycles(import_graph()) == []


def test_nothing_under_neuraltpp_data_imports_earthquakes() -> None:
    graph = import_graph()
    data = [m for m in graph if m == "neuraltpp.data" or m.startswith("neuraltpp.data.")]
    assert len(data) > 5
    assert all(m.startswith(("neuraltpp.data", "commonio")) for d in data for m in graph[d])
