"""The package's floors, read from the AST of every module: imports point down (or sideways within a
package), never up, and no group of modules imports itself round in a circle (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nestor_ds"

# from the ground up; a top-level module or sub-package not listed here fails the test until it gets a floor
FLOORS = {
    "atomic": 0,
    "safe_load": 0,
    "integrity": 0,
    "profiling": 0,
    "errors": 0,
    "config": 0,
    "tracking": 1,
    "data": 1,
    "model": 1,
    "inference": 2,
    "engine": 3,
    "studies": 4,
    "cli": 5,
    "__main__": 6,
    "launch": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every nestor_ds module ``path`` imports, anywhere in the file (``from a.b import c``: a.b.c when that is
    a module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            }
    return {name for name in found if name.split(".")[0] == "nestor_ds"}


def _floor_of(module: str) -> tuple[str, int | None]:
    part = module.split(".")[1] if "." in module else ""
    return part, FLOORS.get(part)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) for name, path in modules.items()}


def test_every_part_of_the_package_has_a_floor() -> None:
    parts = {_floor_of(m)[0] for m in _modules() if m != "nestor_ds"}
    assert parts - set(FLOORS) == set(), "give each new module or sub-package a floor in FLOORS"


def test_imports_never_point_up_or_sideways_between_parts_of_a_floor() -> None:
    wrong = []
    for module, targets in _graph().items():
        if module == "nestor_ds":  # the root re-exports inference lazily for users, and holds __version__
            continue
        part, floor = _floor_of(module)
        for target in targets:
            other, other_floor = _floor_of(target)
            if target == "nestor_ds" or other == part or other_floor is None or floor is None:
                continue  # the root holds __version__ and lazy re-exports; unknown parts fail the test above
            if other_floor > floor or (other_floor == floor and floor > 0):
                wrong.append(f"{module} (floor {floor}) -> {target} (floor {other_floor})")
    assert wrong == []


def test_tracking_imports_only_the_ground_floor() -> None:
    wrong = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        if _floor_of(m)[0] == "tracking"
        for t in targets
        if _floor_of(t)[0] != "tracking" and _floor_of(t)[1] != 0
    ]
    assert wrong == []


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


def test_no_import_circles() -> None:
    # a package's __init__ re-exporting its own modules is not a circle of the code's design: leave those edges out
    graph = {
        m: {t for t in targets if not (m.startswith(t + ".") and t != "nestor_ds")} for m, targets in _graph().items()
    }
    assert _cycles(graph) == []


def test_the_checker_sees_circles_and_upward_imports() -> None:
    """The checks above can fail: a made-up circle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _floor_of("nestor_ds.model.export") == ("model", 1) and _floor_of("nestor_ds.engine.x") == ("engine", 3)
