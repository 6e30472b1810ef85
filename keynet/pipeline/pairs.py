"""Image pairs to match: exhaustive, sequential with a window, or read from a pairs file
(one ``name0 name1`` per line, the hloc / COLMAP ``match_list`` convention). The fourth
mode, ``retrieval`` (each image with its K nearest images by a global descriptor of its
features), needs the features: :func:`keynet.pipeline.retrieval.retrieval_pairs`.

Pairs are ``(name0, name1)`` tuples of image names (paths relative to the image folder,
``/``-separated). Each unordered pair appears once; a pair of an image with itself is
refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

Pair = Tuple[str, str]
PAIR_MODES = ("exhaustive", "sequential", "retrieval", "file")
#: The modes :func:`make_pairs` makes from the names alone (``retrieval`` needs the features).
NAME_PAIR_MODES = ("exhaustive", "sequential", "file")


class PairsError(ValueError):
    """A pairs file or pair specification is unusable (the message names the culprit)."""


def exhaustive_pairs(names: Sequence[str]) -> List[Pair]:
    """Every unordered pair ``(names[i], names[j])``, ``i < j``: n(n-1)/2 pairs."""
    names = list(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential_pairs(names: Sequence[str], window: int = 5) -> List[Pair]:
    """Each image with the ``window`` images that follow it in ``names`` (video or a walk
    around an object, ordered by name): about ``n * window`` pairs."""
    if int(window) < 1:
        raise PairsError(f"the sequential window must be >= 1, got {window}")
    names = list(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(len(names), i + 1 + int(window)))]


def dedupe_pairs(pairs: Iterable[Pair]) -> List[Pair]:
    """Drop repeated pairs (``(a, b)`` and ``(b, a)`` are the same pair), keep the first order."""
    seen, out = set(), []
    for a, b in pairs:
        key = (a, b) if a <= b else (b, a)
        if key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def read_pairs(path: Union[str, os.PathLike], names: Optional[Sequence[str]] = None) -> List[Pair]:
    """Read a pairs file: one ``name0 name1`` per line (extra columns, as in some hloc
    files, are ignored); blank lines and ``#`` comments skipped; duplicates dropped.

    With ``names`` (the images available), a pair naming an unknown image is an error.
    Raises :class:`PairsError` naming the file and line for a missing or empty file, a
    line with fewer than two names, a self pair or an unknown image.
    """
    p = Path(path)
    if not p.is_file():
        raise PairsError(f"pairs file not found: {p}")
    known = set(names) if names is not None else None
    pairs: List[Pair] = []
    for k, line in enumerate(p.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < 2:
            raise PairsError(f"{p}:{k}: expected 'name0 name1', got {s!r}")
        a, b = parts[0], parts[1]
        if a == b:
            raise PairsError(f"{p}:{k}: an image paired with itself ({a})")
        if known is not None:
            for n in (a, b):
                if n not in known:
                    raise PairsError(f"{p}:{k}: unknown image {n!r} (not in the image folder)")
        pairs.append((a, b))
    if not pairs:
        raise PairsError(f"pairs file is empty: {p}")
    return dedupe_pairs(pairs)


def write_pairs(path: Union[str, os.PathLike], pairs: Iterable[Pair]) -> Path:
    """Write ``name0 name1`` lines (the format :func:`read_pairs` and COLMAP read)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return p


def make_pairs(names: Sequence[str], mode: str = "exhaustive", window: int = 5,
               pairs_file: Optional[Union[str, os.PathLike]] = None) -> List[Pair]:
    """Pairs of ``names`` by ``mode``: 'exhaustive', 'sequential' (with ``window``) or
    'file' (``pairs_file``; a given ``pairs_file`` implies 'file'). 'retrieval' needs the
    features (:func:`keynet.pipeline.retrieval.retrieval_pairs`): a :class:`PairsError` here."""
    if pairs_file is not None:
        mode = "file"
    if mode == "exhaustive":
        pairs = exhaustive_pairs(names)
    elif mode == "sequential":
        pairs = sequential_pairs(names, window)
    elif mode == "file":
        if pairs_file is None:
            raise PairsError("pair mode 'file' needs a pairs file")
        pairs = read_pairs(pairs_file, names)
    elif mode == "retrieval":
        raise PairsError("pair mode 'retrieval' needs the images' features: use "
                         "keynet.pipeline.retrieval.retrieval_pairs (keynet match / reconstruct do)")
    else:
        raise PairsError(f"unknown pair mode {mode!r}; choose one of {PAIR_MODES}")
    if not pairs:
        raise PairsError(f"no image pairs: {len(names)} image(s) given, at least 2 are needed")
    return pairs
