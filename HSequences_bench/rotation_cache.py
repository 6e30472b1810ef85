"""The rotation benchmark's features on the shared store: one ``.npz`` per (method, image, angle).

A rerun or an interrupted run does not extract an image twice. Layout (on
:class:`~HSequences_bench.feature_store.NpzStore`):
``<cache dir>/<method>-<hash of the method's tag>/<data folder>/<sequence>/<image>@<angle>.npz``
holding ``keypoints``, ``descriptors`` and, for oriented methods, ``orientations``. Files are
written atomically; an unreadable one is extracted again.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from HSequences_bench.feature_store import NpzStore, load_npz, method_folder, save_npz
from HSequences_bench.rotation import FeatureSet, ImageRef, Method, load_image

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)
#: Hex digits of the tag's hash in a method's folder name.
TAG_DIGITS = 10


def method_cache_folder(method: Method) -> str:
    """``<method>-<hash of its tag>``: the folder of ``method``'s features."""
    return method_folder(method.name, method.tag, TAG_DIGITS)


def feature_file(ref: ImageRef) -> str:
    """``<data folder>/<sequence>/<image>@<angle>.npz``: the file of ``ref`` in a method's folder."""
    return f"{ref.key}@{ref.angle:g}.npz"


def cache_path(cache_dir: PathLike, method: Method, ref: ImageRef) -> Path:
    """Where the features of ``method`` on ``ref`` are cached."""
    return Path(cache_dir) / method_cache_folder(method) / feature_file(ref)


def encode_features(features: FeatureSet) -> Dict[str, np.ndarray]:
    """The arrays of ``features`` in a cache file (``orientations`` only when it has them)."""
    arrays = {"keypoints": np.asarray(features.keypoints), "descriptors": np.asarray(features.descriptors)}
    if features.orientations is not None:
        arrays["orientations"] = np.asarray(features.orientations)
    return arrays


def decode_features(z: Mapping[str, np.ndarray]) -> Optional[FeatureSet]:
    """The features of a cache file's arrays; None when they lack keypoints or descriptors."""
    if "keypoints" not in z or "descriptors" not in z:
        return None
    return FeatureSet(z["keypoints"], z["descriptors"], z["orientations"] if "orientations" in z else None)


def _warn(path: Path, exc: BaseException) -> None:
    log.warning("unreadable cached features %s (%s): extracting again", path, exc)


def save_features(path: PathLike, features: FeatureSet) -> None:
    """Write ``features`` to ``path`` (``.npz``) atomically."""
    save_npz(path, **encode_features(features))


def load_features(path: PathLike) -> Optional[FeatureSet]:
    """The features cached in ``path``; None when the file is missing or unreadable."""
    z = load_npz(path, _warn)
    return None if z is None else decode_features(z)


class FeatureStore:
    """A :data:`~HSequences_bench.rotation.FeatureSource` with a disk cache (``cache_dir``;
    None: no disk cache) and a small memory of recent results (source images are used by
    every angle). The image last read is kept, so the methods share one rendering."""

    def __init__(self, cache_dir: Optional[PathLike] = None, memory: int = 16) -> None:
        self.store = NpzStore(cache_dir, on_unreadable=_warn)
        self.cache_dir = self.store.cache_dir
        self.memory = int(memory)
        self._recent: "OrderedDict[Tuple[str, str, str, float], FeatureSet]" = OrderedDict()
        self._image: Optional[Tuple[Tuple[str, float], np.ndarray]] = None

    @property
    def extracted(self) -> int:
        """Images extracted (not found in the cache)."""
        return self.store.counts["features"]

    @property
    def reused(self) -> int:
        """Images read from the cache."""
        return self.store.counts["features_reused"]

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
        path = self.store.path(method_cache_folder(method), feature_file(ref))
        feats = self.store.cached("features", [path], lambda: FeatureSet(*method.extract(self.image(ref))),
                                  encode_features, decode_features)
        self._recent[key] = feats
        while len(self._recent) > self.memory:
            self._recent.popitem(last=False)
        return feats
