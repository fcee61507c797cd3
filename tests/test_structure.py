"""The layout stays as docs/architecture.md describes it.

Every import of every module counts, at the top of the file or inside a function: a cycle of
lazy imports is still a cycle for whoever reads or changes the code.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nbtrain"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(p): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for p in sorted(ROOT.rglob("*.py"))
    }


MODULES = _modules()


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    is_pkg = (ROOT.parent / Path(*base) / "__init__.py").exists()
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import in the module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            names = [a.name for a in node.names]
            # `from nbtrain.engine import lora` imports the submodule nbtrain.engine.lora
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            out.extend((f"{target}.{n}", [], node.lineno) for n in subs)
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, tree in MODULES.items():
        for target, _, _ in _imports(mod, tree):
            # importing a.b.c runs a and a.b first: point at the deepest module we own
            parts = target.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            dest = ".".join(parts)
            if dest and dest != mod and dest.startswith("nbtrain"):
                graph[mod].add(dest)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    sys.setrecursionlimit(10_000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges from a package's ``__init__`` to its own submodules: re-exporting a
    submodule's names is how a package offers its API, and it is not a cycle in the layering."""
    return {
        m: {d for d in deps if not (m != "nbtrain" and d.startswith(m + "."))}
        for m, deps in graph.items()
    } | {"nbtrain": {d for d in graph["nbtrain"] if d.count(".") == 1}}


def test_no_import_cycles() -> None:
    cycles = _cycles(_package_edges(_edges()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = []
    for mod, tree in MODULES.items():
        for target, names, line in _imports(mod, tree):
            if not target.startswith("nbtrain") or target == mod:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{mod}:{line} imports {target}.{n}")
    assert not bad, "\n".join(bad)


def test_config_imports_only_stdlib_and_yaml() -> None:
    allowed_third_party = {"yaml"}
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for mod, tree in MODULES.items():
        if not mod.startswith("nbtrain.config"):
            continue
        for target, _, line in _imports(mod, tree):
            top = target.split(".")[0]
            if top == "nbtrain":
                if not (target.startswith("nbtrain.config") or target == "nbtrain.errors"):
                    bad.append(f"{mod}:{line} imports {target}")
            elif top not in stdlib and top not in allowed_third_party and top != "__future__":
                bad.append(f"{mod}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_engine_never_prints_or_imports_ipython() -> None:
    bad = []
    for mod, tree in MODULES.items():
        if not mod.startswith("nbtrain.engine"):
            continue
        for target, _, line in _imports(mod, tree):
            if target.split(".")[0] in ("IPython", "ipywidgets") or target.startswith(
                ("nbtrain.display", "nbtrain.ui", "nbtrain.magics")
            ):
                bad.append(f"{mod}:{line} imports {target}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                bad.append(f"{mod}:{node.lineno} calls print()")
    assert not bad, "\n".join(bad)


def test_the_engine_builds_no_html() -> None:
    bad = []
    for mod, tree in MODULES.items():
        if not mod.startswith("nbtrain.engine"):
            continue
        for target, names, line in _imports(mod, tree):
            if target == "html" and "escape" in names:
                bad.append(f"{mod}:{line} imports html.escape")
        for node in ast.walk(tree):  # markup written into a string: a renderer's job
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _HTML_TAG.search(node.value):
                    bad.append(f"{mod}:{node.lineno} writes HTML {node.value[:40]!r}")
    assert not bad, "\n".join(bad)


_HTML_TAG = re.compile(
    r"</?(div|span|table|tr|td|th|b|i|p|pre|code|br|ul|li|svg|style|h[1-6])[\s>/]"
)


@pytest.mark.parametrize(
    "cycle",
    [["a", "b"]],
)
def test_the_cycle_finder_finds_cycles(cycle: list[str]) -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [cycle]
