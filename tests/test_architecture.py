"""The rooms of the house and who may import whom, checked on the source (no import needed),
plus what importing the light packages loads (checked in a fresh interpreter).

Rooms (docs/architecture.md):

* ``keynet.base``: the shared base; imports no other project module;
* ``hardnet``: the descriptor (and the patch networks: orientation, affine shape); imports
  only the base;
* the detector: every other module of ``keynet`` outside ``keynet.pipeline`` and
  ``keynet.commands`` (network, engine, detection, weights, and its training task); imports
  the base, the detector and the benchmark's metrics, never ``hardnet``;
* ``HSequences_bench``: the benchmark's metrics and protocols; import only the base and
  each other;
* ``HSequences_bench.harness``: extracts features for a benchmark; sits above the pipeline;
* ``keynet.pipeline``: the only place where detector and descriptor meet;
* ``keynet.commands`` (and the dispatcher ``keynet.cli``, run by ``python -m keynet`` through
  ``keynet.__main__``): one module per command, which
  imports no other command (``options`` and ``common`` are shared parts, not commands);
  nothing below imports a command;
* each network's weights are loaded beside it: the shipped files and the names that choose
  them (``'default'``, ``'learned'``, ``'real'``, ``'tiny'``) are decoded in ``keynet.weights``
  (Key.Net) and ``hardnet.weights`` (HardNet, OriNet, AffNet) only;
* the packages' ``__init__`` modules export lazily: they import only ``keynet.base.lazy``;
* no module imports one of the project's modules inside a function or class, and there is
  no import cycle.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keynet", "hardnet", "HSequences_bench")
SHARED_COMMAND_PARTS = {"keynet.commands", "keynet.commands.options", "keynet.commands.common"}
#: the dispatcher and ``python -m keynet``, which runs it
DISPATCHERS = {"keynet.cli", "keynet.__main__"}


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


def room(mod: str) -> str:
    """The room of a module: base, hardnet, detector, bench, harness, pipeline, commands, api."""
    if mod in ("keynet", "keynet.pipeline"):
        return "api"
    for prefix, name in (("keynet.base", "base"), ("keynet.pipeline", "pipeline"), ("keynet.commands", "commands"),
                         ("keynet.cli", "commands"), ("keynet.__main__", "commands"), ("HSequences_bench.harness", "harness"),
                         ("HSequences_bench", "bench"), ("hardnet", "hardnet"), ("keynet", "detector")):
        if mod == prefix or mod.startswith(prefix + "."):
            return name
    raise AssertionError(mod)


#: room -> the rooms it may import
ALLOWED = {
    "base": {"base"},
    "hardnet": {"base", "hardnet"},
    "detector": {"base", "detector", "bench"},
    "bench": {"base", "bench"},
    "pipeline": {"base", "detector", "hardnet", "pipeline"},
    "harness": {"base", "detector", "hardnet", "pipeline", "bench", "harness"},
    "commands": {"base", "detector", "hardnet", "pipeline", "bench", "harness", "commands"},
    "api": {"base"},
}


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
    assert {"keynet.base.geometry", "keynet.model", "keynet.engine", "hardnet.model", "keynet.base.training",
            "keynet.pipeline.extraction", "HSequences_bench.evaluate", "keynet.commands.extract"} <= set(MODULES)
    assert not (ROOT / "kpcore").exists() and not (ROOT / "keynet" / "benchmark").exists()


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_rooms(mod):
    mine = room(mod)
    for dep in sorted(GRAPH[mod]):
        # a package's __init__ is imported by Python before any of its modules: not a dependency
        if dep in ("keynet",) and mine != "api":
            continue
        assert room(dep) in ALLOWED[mine], f"{mod} ({mine}) imports {dep} ({room(dep)})"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if room(m) == "commands" and m not in SHARED_COMMAND_PARTS
                                       and m not in DISPATCHERS))
def test_commands_import_no_other_command(mod):
    others = sorted(d for d in GRAPH[mod] if room(d) == "commands" and d not in SHARED_COMMAND_PARTS)
    assert not others, f"{mod} imports the commands {others}: share through keynet.commands.options / common"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_function_local_imports_of_our_modules(mod):
    local = sorted(name for name, top in _imports(mod) if not top)
    if mod == "keynet.cli":  # the dispatcher imports the chosen command by name (importlib), nothing else
        assert not local
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


#: The shipped weights files -> the module that names them (beside its network).
SHIPPED_WEIGHTS = {"keynet.pt": "keynet.weights", "tiny_keynet.pt": "keynet.weights",
                   "hardnet.pt": "hardnet.weights", "hardnet_real.pt": "hardnet.weights",
                   "hardnet_imagenet.pt": "hardnet.weights",
                   "orinet.pt": "hardnet.weights", "affnet.pt": "hardnet.weights",
                   "affnet_imagenet.pt": "hardnet.weights"}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_shipped_weights_are_named_beside_their_network(mod):
    named = sorted({n.value for n in ast.walk(ast.parse(MODULES[mod].read_text()))
                    if isinstance(n, ast.Constant) and n.value in SHIPPED_WEIGHTS})
    wrong = [f for f in named if SHIPPED_WEIGHTS[f] != mod]
    assert not wrong, f"{mod} names the shipped weights {wrong}: use the loaders of {SHIPPED_WEIGHTS[wrong[0]]}"


def _loaded_after(code: str) -> Set[str]:
    probe = ("import sys\n" + code + "\nimport json\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_keynet_and_help_load_no_heavy_package():
    heavy = {"torch", "hardnet", "h5py", "pycolmap", "cv2", "kornia"}
    assert not _loaded_after("import keynet") & heavy
    assert not _loaded_after("import keynet.cli\nkeynet.cli.main(['--help'])\nkeynet.cli.main(['--version'])") & heavy


def test_the_detector_loads_no_descriptor_h5py_or_pycolmap():
    loaded = _loaded_after("import keynet.detection, keynet.training, keynet.weights, keynet.subpixel")
    assert not loaded & {"hardnet", "h5py", "pycolmap"}, loaded & {"hardnet", "h5py", "pycolmap"}


def test_the_api_names_resolve_lazily():
    import importlib

    import keynet
    import keynet.pipeline
    for m in MODULES:  # importing every module must not shadow an API name (a submodule named like a function)
        if room(m) in ("pipeline", "detector", "api"):
            importlib.import_module(m)
    for name in keynet.__all__:
        assert getattr(keynet, name) is not None, name
    assert callable(keynet.extract) and keynet.extract is keynet.pipeline.extract
    assert callable(keynet.reconstruct) and callable(keynet.match_images)
    assert keynet.load_detector.__module__ == "keynet.pipeline.extraction"
    with pytest.raises(AttributeError):
        keynet.no_such_name  # noqa: B018
