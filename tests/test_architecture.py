"""The package layering, checked on the source (no import needed):

* ``kpcore`` (the base) imports neither ``keynet`` nor ``hardnet``;
* ``hardnet`` imports no ``keynet``;
* the detector modules of ``keynet`` import no ``hardnet``: only the composition modules
  (feature extraction with a descriptor, matching, reconstruction) combine the two;
* no module imports one of the project's modules inside a function or class;
* no import cycle between the project's modules.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kpcore", "keynet", "hardnet")
#: keynet modules that compose detector and descriptor (allowed to import hardnet)
COMPOSITION = {"keynet", "keynet.extract", "keynet.matching", "keynet.reconstruction", "keynet.hloc_io",
               "keynet.pairs", "keynet.cli", "keynet.commands"}


def _composition(mod: str) -> bool:
    return mod in COMPOSITION or mod.startswith("keynet.commands.")


def _modules() -> Dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> List[Tuple[str, bool]]:
    """(imported project module, at module level) pairs of ``mod``."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    top = set(id(n) for n in tree.body)
    for n in tree.body:  # imports inside a module-level try/if still run at import time
        if isinstance(n, (ast.Try, ast.If)):
            top |= {id(x) for x in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, is_pkg, node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                found.append((name, id(node) in top))
    return found


GRAPH: Dict[str, Set[str]] = {m: {i for i, _ in _imports(m)} - {m} for m in MODULES}


def test_modules_found():
    assert {"kpcore.geometry", "keynet.model", "keynet.engine", "hardnet.model", "kpcore.training"} <= set(MODULES)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_layering(mod):
    deps = {d.split(".")[0] for d in GRAPH[mod]}
    if mod.startswith("kpcore"):
        assert not deps & {"keynet", "hardnet"}, f"{mod} (base layer) imports {deps}"
    if mod.startswith("hardnet"):
        assert "keynet" not in deps, f"{mod} imports keynet"
    if mod.startswith("keynet") and not _composition(mod):
        assert "hardnet" not in deps, f"{mod} (detector) imports hardnet; compose them in {sorted(COMPOSITION)}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_function_local_imports_of_our_modules(mod):
    local = sorted(name for name, top in _imports(mod) if not top)
    assert not local, f"{mod} imports {local} inside a function or class"


def test_no_import_cycles():
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if d == m or (m.startswith(d + ".") and d in MODULES and MODULES[d].name == "__init__.py"):
                continue  # a module and its own package's __init__: Python's normal package import
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
