"""Cached generated datasets: a folder of ``.npy`` arrays plus ``manifest.json`` (the
generation parameters and a digest of the source image list). A cache is reused only when
its manifest matches; a regeneration removes the manifest first and writes it last, so an
interrupted one never looks complete. Used by the Key.Net pair generator and the HardNet
patch-pair generator."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

from .files import atomic_write_bytes

log = logging.getLogger(__name__)
MATCH_KEYS = ("version", "params", "num_images", "images_digest")


def files_digest(files: Sequence[Path], root: Path) -> str:
    """SHA-1 of the relative paths and sizes of ``files`` (detects a changed image folder)."""
    h = hashlib.sha1()
    for f in files:
        h.update(f"{Path(f).relative_to(root)}:{Path(f).stat().st_size}\n".encode())
    return h.hexdigest()


def manifest_for(version: int, params: Dict[str, Any], files: Sequence[Path], root: Path) -> Dict[str, Any]:
    """The manifest a cache built from ``files`` (below ``root``) with ``params`` must have."""
    return {"version": version, "params": params, "source": str(Path(root).resolve()),
            "num_images": len(files), "images_digest": files_digest(files, Path(root))}


def reusable(out_dir: Path, want: Dict[str, Any], arrays: Iterable[str], what: str = "data") -> bool:
    """True when ``out_dir`` holds ``<name>.npy`` for every name in ``arrays`` and a manifest
    equal to ``want`` on :data:`MATCH_KEYS` (logs the decision)."""
    man_path = Path(out_dir) / "manifest.json"
    if not man_path.is_file():
        return False
    try:
        have = json.loads(man_path.read_text())
    except ValueError:
        have = None
    if have is not None and all(have.get(k) == want[k] for k in MATCH_KEYS):
        if all((Path(out_dir) / f"{a}.npy").is_file() for a in arrays):
            log.info("reusing %s in %s", what, out_dir)
            return True
    log.warning("%s in %s were made with other parameters or images: regenerating", what, out_dir)
    return False


def split_arrays(keys: Iterable[str]) -> List[str]:
    """The array names of a cache with a train and a validation split: ``<split>_<key>``."""
    keys = list(keys)
    return [f"{s}_{k}" for s in ("train", "val") for k in keys]


def reuse_or_begin(out_dir: Path, want: Dict[str, Any], arrays: Iterable[str], what: str = "data",
                   force: bool = False) -> bool:
    """True when ``out_dir`` is :func:`reusable` (never with ``force``); else it is started
    (:func:`begin`) and the answer is False: the caller generates."""
    if not force and reusable(out_dir, want, arrays, what):
        return True
    begin(out_dir)
    return False


def begin(out_dir: Path) -> None:
    """Start (re)generating into ``out_dir``: create it and drop any old manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    man = out_dir / "manifest.json"
    if man.exists():
        man.unlink()  # an interrupted regeneration must not look complete


def commit(out_dir: Path, manifest: Dict[str, Any]) -> None:
    """Finish a generation: write the manifest (atomically), after all arrays."""
    atomic_write_bytes(Path(out_dir) / "manifest.json", json.dumps(manifest, indent=2).encode())


def read_manifest(out_dir) -> dict:
    """The manifest of a cache folder."""
    return json.loads((Path(out_dir) / "manifest.json").read_text())
