"""The import graph of src/rnnfast, and the house rules it must keep.

    python .ci/check_imports.py [--graph]

Fails (exit 1) when a module takes a private name (``_x``) from another module outside its own
package, or when the compiled core (``rnnfast._core``) imports anything above it. ``--graph``
prints every module's imports of the package. Private *modules* (``rnnfast._validation``) are
meant to be imported by their public names from anywhere.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = "rnnfast"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan_python(path: Path, modules: set[str]) -> tuple[set[str], list[str]]:
    module = module_name(path)
    package = package_of(module, path)
    tree = ast.parse(path.read_text(), str(path))
    imported: set[str] = set()
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> rnnfast module it is bound to

    def check_private(source: str, name: str, line: int) -> None:
        is_package = (SRC / Path(*source.split("."))).is_dir()
        source_package = source if is_package else source.rpartition(".")[0]
        # Within a subpackage (rnnfast.nn, rnnfast.models, ...) private names are shared; the
        # top-level modules of rnnfast are separate rooms.
        within = source_package == package and package != PKG
        if is_private(name) and f"{source}.{name}" not in modules and not within:
            problems.append(f"{path.relative_to(SRC)}:{line}: takes private {name!r} from {source}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PKG:
                    imported.add(a.name)
                    aliases[a.asname or a.name.split(".")[0]] = (a.asname and a.name) or PKG
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, path, node)
            if source.split(".")[0] != PKG:
                continue
            for a in node.names:
                full = f"{source}.{a.name}"
                if full in modules:  # a module
                    imported.add(full)
                    aliases[a.asname or a.name] = full
                else:
                    imported.add(source)
                    check_private(source, a.name, node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            source = aliases.get(node.value.id)
            if source and is_private(node.attr) and f"{source}.{node.attr}" not in modules:
                check_private(source, node.attr, node.lineno)
    imported.discard(module)
    return imported, problems


def scan_cython(path: Path) -> set[str]:
    text = path.read_text()
    found = re.findall(r"^\s*(?:from|c?import)\s+(rnnfast[\w.]*)", text, re.M)
    return set(found)


def main() -> int:
    files = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in files} | {
        module_name(p) for p in SRC.rglob("*.pyx")
    }
    graph: dict[str, set[str]] = {}
    problems: list[str] = []
    for path in files:
        imports, found = scan_python(path, modules)
        graph[module_name(path)] = imports
        problems += found
    for path in sorted(SRC.rglob("*.pyx")) + sorted(SRC.rglob("*.pxd")):
        module = module_name(path)
        imports = scan_cython(path)
        graph[module] = graph.get(module, set()) | imports
        if module.startswith(f"{PKG}._core"):
            up = sorted(m for m in imports if not m.startswith(f"{PKG}._core"))
            problems += [f"{path.relative_to(SRC)}: the compiled core imports {m}" for m in up]
    for path in files:
        module = module_name(path)
        if module.startswith(f"{PKG}._core"):
            up = sorted(m for m in graph[module] if not m.startswith(f"{PKG}._core"))
            problems += [f"{path.relative_to(SRC)}: the compiled core imports {m}" for m in up]
    if "--graph" in sys.argv:
        for module in sorted(graph):
            print(f"{module} -> {', '.join(sorted(graph[module])) or '(nothing of rnnfast)'}")
    for p in problems:
        print(p)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} arrows, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
