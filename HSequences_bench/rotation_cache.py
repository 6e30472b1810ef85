"""Feature cache of the rotation benchmark: one ``.npz`` per (method, image, angle), so that
a rerun or an interrupted run does not extract an image twice.

Layout: ``<cache dir>/<method>-<hash of the method's tag>/<data folder>/<sequence>/<image>@<angle>.npz``
holding ``keypoints``, ``descriptors`` and, for oriented methods, ``orientations``. Files are
written atomically; an unreadable one is extracted again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from HSequences_bench.rotation import FeatureSet, ImageRef, Method, load_image
from keynet.base.files import atomic_write_bytes

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)


def cache_path(cache_dir: PathLike, method: Method, ref: ImageRef) -> Path:
    """Where the features of ``method`` on ``ref`` are cached."""
    tag = hashlib.sha1(method.tag.encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{method.name}-{tag}" / f"{ref.key}@{ref.angle:g}.npz"


def save_features(path: PathLike, features: FeatureSet) -> None:
    """Write ``features`` to ``path`` (``.npz``) atomically."""
    arrays = {"keypoints": np.asarray(features.keypoints), "descriptors": np.asarray(features.descriptors)}
    if features.orientations is not None:
        arrays["orientations"] = np.asarray(features.orientations)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_features(path: PathLike) -> Optional[FeatureSet]:
    """The features cached in ``path``; None when the file is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return FeatureSet(z["keypoints"], z["descriptors"], z["orientations"] if "orientations" in z else None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("unreadable cached features %s (%s): extracting again", p, exc)
        return None


class FeatureStore:
    """A :data:`~HSequences_bench.rotation.FeatureSource` with a disk cache (``cache_dir``;
    None: no disk cache) and a small memory of recent results (source images are used by
    every angle). The image last read is kept, so the methods share one rendering."""

    def __init__(self, cache_dir: Optional[PathLike] = None, memory: int = 16) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory = int(memory)
        self._recent: "OrderedDict[Tuple[str, str, str, float], FeatureSet]" = OrderedDict()
        self._image: Optional[Tuple[Tuple[str, float], np.ndarray]] = None
        self.extracted = 0  # images extracted (not found in a cache)

    def image(self, ref: ImageRef) -> np.ndarray:
        """The rendered image of ``ref`` (the last one is kept)."""
        key = (str(ref.path), ref.angle)
        if self._image is None or self._image[0] != key:
            self._image = (key, load_image(ref))
        return self._image[1]

    def __call__(self, method: Method, ref: ImageRef) -> FeatureSet:
        key = (method.name, method.tag, ref.key, ref.angle)
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        path = cache_path(self.cache_dir, method, ref) if self.cache_dir is not None else None
        feats = load_features(path) if path is not None else None
        if feats is None:
            feats = FeatureSet(*method.extract(self.image(ref)))
            self.extracted += 1
            if path is not None:
                save_features(path, feats)
        self._recent[key] = feats
        while len(self._recent) > self.memory:
            self._recent.popitem(last=False)
        return feats
