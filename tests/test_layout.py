"""The package's shape: each stage imports only the stages below it, a source never
imports another source, and the import graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "collector"

# What each part of the package may import from the rest of it (besides itself).
ALLOWED = {
    "errors": set(),
    "metrics": set(),
    "normalize": {"errors"},
    "spool": {"errors"},
    "inspect": {"errors", "normalize"},
    "config": {"errors", "normalize", "spool"},
    "web": {"__init__", "errors", "metrics", "config", "spool", "inspect"},
    "sources": {"errors", "metrics", "config", "normalize", "spool", "web", "inspect"},
    "delivery": {"errors", "metrics", "config", "normalize", "spool", "inspect"},
    "app": {
        "__init__",
        "errors",
        "metrics",
        "config",
        "spool",
        "web",
        "sources",
        "delivery",
        "inspect",
    },
    "cli": {
        "__init__",
        "errors",
        "metrics",
        "config",
        "spool",
        "web",
        "app",
        "delivery",
        "inspect",
    },
    "__main__": {"cli"},
    "__init__": set(),
}
# Modules of sources/ that are shared, not sources of their own.
SHARED_BY_SOURCES = {"base", "visitors"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "collector":
                continue
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "collector"}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_stage_imports_only_what_is_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if part(target) != part(module) and part(target) not in ALLOWED[part(module)]
    ]
    assert not wrong


def test_no_source_imports_another_source() -> None:
    wrong = []
    for module, targets in graph().items():
        parts = module.split(".")
        if parts[1:2] != ["sources"] or len(parts) < 3 or parts[2] in SHARED_BY_SOURCES:
            continue
        for target in targets:
            tparts = target.split(".")
            other_source = len(tparts) > 2 and tparts[2] not in (*SHARED_BY_SOURCES, parts[2])
            if tparts[1:2] == ["sources"] and other_source:
                wrong.append(f"{module} imports {target}")
    assert not wrong


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    # A package's __init__ importing its own modules is how a package exports them; the
    # cycle that matters runs through modules.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if target.startswith(node + "."):
                continue  # a package exporting its own modules
            if state.get(target) == 1:
                cycles.append(
                    [*trail[trail.index(target) :], target] if target in trail else [node, target]
                )
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles
