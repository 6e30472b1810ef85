"""The cached feature store of every benchmark: a method's per-image results as atomic ``.npz`` files.

Layout: ``<cache dir>/<method folder>/<relative path>.npz``, the method folder named by a hash
of what changes the method's output (:func:`method_folder`: ``<prefix>-<sha1 of the tag>``).
Each benchmark keeps its own relative paths and arrays:

* rotation (:mod:`HSequences_bench.rotation_cache`): ``<name>-<10 hex>/<data folder>/<sequence>/<image>@<angle>.npz``;
* wide baseline (:mod:`HSequences_bench.harness.wide_baseline_run`):
  ``<family>-features-<12 hex>/features/<image key>.npz``, ``<family>-<12 hex>/matches/...`` and
  ``.../estimates/...``, each folder with a ``tag.txt`` holding its tag in words.

:class:`NpzStore` reads a file back (an unreadable one, or one lacking arrays, is computed
again), writes what it computed atomically (a temp file, then ``os.replace``) and counts,
per kind, what it reused and what it computed.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set, TypeVar, Union

import numpy as np

from keynet.base.files import atomic_write_bytes

PathLike = Union[str, os.PathLike]
T = TypeVar("T")
#: Called with the path and the error of a cache file that cannot be read (it is computed again).
OnUnreadable = Callable[[Path, BaseException], None]
#: The errors of reading a damaged ``.npz`` (truncated, not a zip, a bad array).
READ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)


def tag_hash(tag: str, digits: int) -> str:
    """The first ``digits`` hex digits of the SHA-1 of ``tag``."""
    return hashlib.sha1(tag.encode()).hexdigest()[:digits]


def method_folder(prefix: str, tag: str, digits: int) -> str:
    """``<prefix>-<hash of tag>``: the cache folder of a method's results."""
    return f"{prefix}-{tag_hash(tag, digits)}"


def warn_stderr(path: Path, exc: BaseException) -> None:
    """The default :data:`OnUnreadable`: a warning line on stderr (above any progress bar)."""
    from tqdm import tqdm
    tqdm.write(f"warning: unreadable cache file {path} ({exc}): computing it again", file=sys.stderr)


def save_npz(path: PathLike, **arrays: Any) -> None:
    """Write ``arrays`` to ``path`` (``.npz``, uncompressed) atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: PathLike, on_unreadable: OnUnreadable = warn_stderr) -> Optional[Dict[str, np.ndarray]]:
    """Every array of the ``.npz`` at ``path``; None when it is missing or unreadable (then
    ``on_unreadable`` is told)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except READ_ERRORS as exc:
        on_unreadable(p, exc)
        return None


class NpzStore:
    """Results under ``cache_dir`` (None: no disk cache), reused unless ``overwrite``.

    :meth:`cached` answers a result from the first readable file of its paths, or computes,
    writes and answers it; ``counts[kind]`` / ``counts[kind + "_reused"]`` count both for the
    kinds named in ``counted``."""

    def __init__(self, cache_dir: Optional[PathLike], overwrite: bool = False,
                 on_unreadable: OnUnreadable = warn_stderr, counted: Iterable[str] = ("features",)) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.overwrite = bool(overwrite)
        self.on_unreadable = on_unreadable
        self.counts: Dict[str, int] = {}
        for kind in counted:
            self.counts.update({kind: 0, f"{kind}_reused": 0})
        self._tagged: Set[str] = set()

    def path(self, folder: str, relative: str, tag: Optional[str] = None) -> Optional[Path]:
        """``<cache_dir>/<folder>/<relative>`` (None without a disk cache); with ``tag``, the
        folder's ``tag.txt`` is (re)written once when it does not hold it."""
        if self.cache_dir is None:
            return None
        root = self.cache_dir / folder
        if tag is not None and folder not in self._tagged:
            tag_file = root / "tag.txt"
            if not tag_file.is_file() or tag_file.read_text() != tag + "\n":
                atomic_write_bytes(tag_file, (tag + "\n").encode("utf-8"))
            self._tagged.add(folder)
        return root / relative

    def read(self, path: Optional[Path]) -> Optional[Dict[str, np.ndarray]]:
        """The arrays at ``path``; None without a path, with ``overwrite``, or when unreadable."""
        return None if path is None or self.overwrite else load_npz(path, self.on_unreadable)

    def cached(self, kind: str, paths: Iterable[Optional[Path]], compute: Callable[[], T],
               encode: Callable[[T], Mapping[str, Any]], decode: Callable[[Mapping[str, np.ndarray]], Optional[T]]
               ) -> T:
        """The result kept in the first readable file of ``paths`` (``decode``: None when its
        arrays do not make one), else ``compute()``, written to ``paths[0]`` as ``encode`` gives it."""
        paths = list(paths)
        for p in paths:
            z = self.read(p)
            if z is None:
                continue
            value = decode(z)
            if value is not None:
                self._count(kind, reused=True)
                return value
            break  # a readable file lacking arrays: computed again, as a missing one
        value = compute()
        self._count(kind, reused=False)
        if paths and paths[0] is not None:
            save_npz(paths[0], **encode(value))
        return value

    def _count(self, kind: str, reused: bool) -> None:
        key = f"{kind}_reused" if reused else kind
        if key in self.counts:
            self.counts[key] += 1
