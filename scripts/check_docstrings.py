"""Count public functions, classes and methods of nestor_ds without a docstring (``forward`` exempt: its class's
docstring says what it computes), per folder; fail when any is missing where the house requires none.

    python scripts/check_docstrings.py [--list]
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where every public function, class and method must say why it exists (extend as folders are brought up to it)
REQUIRED = (
    "nestor_ds/engine/",
    "nestor_ds/model/",
    "nestor_ds/data/loader.py",
    "nestor_ds/data/shards.py",
    "nestor_ds/errors.py",
    "nestor_ds/integrity.py",
    "nestor_ds/profiling.py",
    "nestor_ds/cli.py",
)


def missing(path: Path) -> list[str]:
    """``file:line name`` of each public definition in ``path`` that has no docstring."""
    found = []

    def visit(body: list[ast.stmt], prefix: str, in_class: bool) -> None:
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            public = not node.name.startswith("_")
            exempt = in_class and node.name == "forward"
            if public and not exempt and ast.get_docstring(node) is None:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {prefix}{node.name}")
            if isinstance(node, ast.ClassDef) and public:
                visit(node.body, f"{prefix}{node.name}.", True)

    visit(ast.parse(path.read_text(), str(path)).body, "", False)
    return found


def main() -> int:
    """Print the counts (and with --list every missing one); exit 1 if a required place misses any."""
    everything = [m for p in sorted((ROOT / "nestor_ds").rglob("*.py")) for m in missing(p)]
    per_folder = Counter(str(Path(m.split(":")[0]).parent) for m in everything)
    required = [m for m in everything if m.startswith(REQUIRED)]
    for folder, n in sorted(per_folder.items()):
        print(f"  {folder:<28} {n:3d} without a docstring")
    print(
        f"public functions, classes and methods without a docstring: {len(everything)} "
        f"({len(required)} where none may be missing)"
    )
    for m in everything if "--list" in sys.argv else required:
        print(f"    {m}")
    return 1 if required else 0


if __name__ == "__main__":
    sys.exit(main())
