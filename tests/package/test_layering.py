"""Layering: the source registry stands below evaluation, and no module of medmix/ or trainer/ sits in an
import cycle.

Imports are read with `ast`, not by importing, so the test sees every edge — including imports
inside functions. Lazy imports count: a cycle closed by a function-level import still means two
modules that cannot be understood (or split, or tested) one without the other, and the lazy import
is usually a patch over that (trainer's `model.generate` importing `data.encode_prompt` was one).
`if TYPE_CHECKING:` imports are left out: they never run and exist to break nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("medmix", "trainer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere in its body (a package import counts as its __init__)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(resolve(alias.name) or "")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            for alias in node.names:
                # `from pkg import mod` imports the submodule; `from mod import name` imports mod
                found.add(resolve(f"{base}.{alias.name}") or resolve(base) or "")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard("")
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted, as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
            strong(v)
    return sorted(found)


def _package_of_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop a package's edges to its own submodules from its `__init__` (re-exports are not a layering
    cycle: importing `pkg.sub` runs `pkg/__init__` first anyway, so `pkg.sub → pkg` is an edge
    Python adds on its own)."""
    return {m: {t for t in deps if not t.startswith(m + ".")} for m, deps in graph.items()}


def test_the_import_graph_is_read_from_the_real_files():
    graph = import_graph()
    assert "medmix.planning" in graph["medmix.pipeline"] and "medmix.fetch.upstreams" in graph["medmix.fetch.lock"]
    assert "medmix.cli.common" in graph["medmix.cli.eval_commands"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = _package_of_init_edges(import_graph())
    inside = [c for c in cycles(graph) if any(m == package or m.startswith(package + ".") for m in c)]
    assert inside == [], f"import cycles in {package}/: " + "; ".join(" ↔ ".join(c) for c in inside)


def test_sources_import_nothing_from_evaluation():
    graph = import_graph()
    leaks = {m: sorted(d for d in deps if d == "medmix.evaluation" or d.startswith("medmix.evaluation."))
             for m, deps in graph.items() if m == "medmix.sources" or m.startswith("medmix.sources.")}
    assert {m: d for m, d in leaks.items() if d} == {}


# -- the plan: packages by mechanism, in layers ----------------------------------------------------

# Bottom to top. A module may import its own layer and the layers below it, never one above: that is
# what lets a newcomer read `core` without `mix`, or `mix` without the CLI. Top-level spine modules
# are layers of their own, placed where the build needs them. `trainer` is the user's package; it
# stands on the loader and is used by evaluation, the demo, export and ablation.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("medmix", "medmix.core"),
    ("medmix.phi",),
    ("medmix.imaging",),
    ("medmix.fetch",),
    ("medmix.sources",),
    ("medmix.recipe",),
    ("medmix.planning", "medmix.executors"),
    ("medmix.normalize",),
    ("medmix.buildcache",),
    ("medmix.mix",),
    ("medmix.loader",),
    ("trainer",),
    ("medmix.pipeline", "medmix.preview", "medmix.doctor"),
    ("medmix.api",),
    ("medmix.publish",),
    ("medmix.evaluation",),
    ("medmix.export", "medmix.demo"),
    ("medmix.view",),
    ("medmix.ablate",),
    ("medmix.cli",),
)
MAX_TOP_LEVEL_MODULES = 12


def _unit(module: str) -> str:
    """The layered unit a module belongs to: its package under medmix/, or itself at the top."""
    parts = module.split(".")
    if parts[0] == "trainer":
        return "trainer"
    return ".".join(parts[:2]) if len(parts) > 1 else "medmix"


def _rank() -> dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_package_and_top_level_module_has_a_layer():
    units = {_unit(m) for m in import_graph()}
    assert units - set(_rank()) == set(), "add the new package or module to LAYERS"
    assert set(_rank()) - units == set(), "LAYERS names something that no longer exists"


def test_imports_only_go_down_the_layers():
    rank = _rank()
    upward = sorted(f"{m} → {d}" for m, deps in import_graph().items() for d in deps
                    if rank[_unit(d)] > rank[_unit(m)])
    assert upward == []


def test_packages_import_each_other_without_cycles():
    units: dict[str, set[str]] = {}
    for m, deps in import_graph().items():
        units.setdefault(_unit(m), set()).update(_unit(d) for d in deps if _unit(d) != _unit(m))
    assert cycles(units) == []


def test_the_top_level_holds_the_spine_only():
    top = sorted(p.name for p in (ROOT / "medmix").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for name in import_graph():
        leaf = name.rpartition(".")[2]
        if leaf == "__main__" or (ROOT / Path(*name.split("."))).is_dir():  # `python -m` entries, packages
            continue
        names.setdefault(leaf, []).append(name)
    assert {k: v for k, v in names.items() if len(v) > 1} == {}
