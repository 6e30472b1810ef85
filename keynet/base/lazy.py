"""Lazy re-exports (PEP 562): a package names its public API without importing the modules
behind it until a name is first used, so that ``import keynet`` and ``keynet --help`` stay
cheap (no torch, HardNet, h5py or pycolmap until they are needed)."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, table: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``name -> module`` of ``table``."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        importlib.import_module(package).__dict__[name] = value  # later look-ups are plain attributes
        return value

    def __dir__() -> List[str]:
        return sorted(set(table) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__
