"""No import cycle between llmgen's modules, imports inside functions included.

Every ``import``/``from ... import`` anywhere in a module (top level, function bodies,
``if TYPE_CHECKING:``) is an edge to the deepest llmgen module it names; importing ``a.b.c`` is not
counted as importing the package ``a.b`` (a package's ``__init__`` may re-export what lies below it).
The modules are read from the source folders that form the installed namespace (pyproject's
``package-dir``: ``llmgen/``, ``evals/`` → ``llmgen.evals``, ``cli/`` → ``llmgen.cli``,
``recipes/`` → ``llmgen.recipes``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"llmgen": "llmgen", "llmgen.evals": "evals", "llmgen.cli": "cli", "llmgen.recipes": "recipes"}


def modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package ``__init__``)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            name = ".".join([package, *parts[:-1]] if is_pkg else [package, *parts])
            out[name] = (path, is_pkg)
    return out


def targets(node: ast.Import | ast.ImportFrom, current: str, is_pkg: bool) -> list[str]:
    """The dotted names an import statement may load (``from m import x``: ``m`` and ``m.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        here = current.split(".") if is_pkg else current.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for t in targets(node, name, is_pkg):
                    while t and t not in mods:  # a name imported from a module: the module
                        t = t.rpartition(".")[0]
                    if t and t != name:
                        deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_the_checker_finds_a_cycle_through_a_function_body():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    node = ast.parse("def f():\n    from llmgen.tasks import Task\n").body[0].body[0]
    assert targets(node, "llmgen.evaluate", False) == ["llmgen.tasks", "llmgen.tasks.Task"]
    rel = ast.parse("from .base import Task").body[0]
    assert targets(rel, "llmgen.tasks", True) == ["llmgen.tasks.base", "llmgen.tasks.base.Task"]


def test_no_import_cycle_between_llmgen_modules():
    graph = import_graph()
    assert {"llmgen.tasks", "llmgen.evaluate", "llmgen.evals.passk", "llmgen.cli.core"} <= set(graph)
    assert "llmgen.tasks.base" in graph["llmgen.tasks.math"]  # function-level and top-level imports both read
    assert cycles(graph) == []
