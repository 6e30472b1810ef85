"""The method of the wide-baseline benchmark: what it is built with (:class:`MethodOptions`),
what it gives (:class:`ImageFeatures`, :class:`MatchResult`) and how it extracts and matches
(:class:`Method`)."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from keynet.pipeline.config import FeatureConfig, MatcherConfig
from keynet.pipeline.extraction import extract_image
from keynet.pipeline.matchers import match_descriptors

from .method_base import MethodError

PathLike = Union[str, os.PathLike]


@dataclass
class MethodOptions:
    """What every method is built with (the command's options). ``peer_*``: weights files of
    the kornia methods (``None``: :func:`default_peer_weights`, the method is skipped when absent)."""

    num_points: int = 8000
    max_image_size: int = FeatureConfig.max_image_size
    device: Optional[str] = None
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    peer_keynet: Optional[PathLike] = None
    peer_affnet: Optional[PathLike] = None
    peer_orinet: Optional[PathLike] = None


@dataclass
class ImageFeatures:
    """Features of one image file: ``keypoints`` (N, >=2) x, y[, scale, score] in full-resolution
    pixels (integer pixel centres), ``descriptors`` (N, D) float32, ``size`` (width, height),
    ``seconds``: the time the extraction took (model loading excluded)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    size: Tuple[int, int]
    seconds: float = 0.0
    #: method-specific arrays kept with the features (cached too), e.g. the whole frames and
    #: the view index of each keypoint of the view-synthesis methods; ``extra["level_seconds"]``
    #: (float, one entry per view level): the seconds of each level's features of this image,
    #: which the benchmark then charges a pair only up to the level its matches come from
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


#: The key of :attr:`ImageFeatures.extra` holding the seconds of each view level's features.
LEVEL_SECONDS = "level_seconds"


@dataclass
class MatchResult:
    """The matches a method gives a pair and how it got them."""
    matches: np.ndarray            # (K, 2) int64 indices (image 1, image 2)
    level: int = 0                 # the view level these matches come from (0: the plain images)
    level_seconds: Tuple[float, ...] = ()  # matching seconds of each level tried (features excluded)


class Method:
    """A benchmark method. ``family`` (``keynet``, ``sift``, ``kornia``, ...) and ``tag``
    (settings + weights) name its cache folder (:attr:`cache_name`), so two names of one
    configuration share their cache; ``make_extractor()`` builds (once, on first use) an
    object with ``features(image) -> keynet.pipeline.extraction.Features`` that
    :func:`keynet.pipeline.matching.extract_image` runs on the image downscaled to
    ``max_image_size`` (keypoints mapped back to full resolution)."""

    def __init__(self, family: str, tag: str, make_extractor: Callable[[], object], matcher: MatcherConfig,
                 max_image_size: int, name: str = "", features_tag: str = "") -> None:
        self.family = family
        self.name = name or family
        self.matcher = matcher
        self.max_image_size = int(max_image_size)
        size = f" max_image_size={self.max_image_size}"
        #: everything that changes the matches; ``features_tag`` (default: ``tag``): what changes
        #: the features, when the method's own settings also change only the matching
        self.tag = f"{tag}{size} matcher={matcher.method}:{matcher.resolved_threshold}"
        self.features_tag = f"{features_tag or tag}{size}"
        self._make = make_extractor
        self._extractor: Optional[object] = None

    @property
    def cache_name(self) -> str:
        """``<family>-<hash of the tag>``: the method's folder under ``<out-dir>/cache/``
        (its matches and estimates)."""
        return f"{self.family}-{hashlib.sha1(self.tag.encode()).hexdigest()[:12]}"

    @property
    def features_cache_name(self) -> str:
        """``<family>-features-<hash of the features tag>``: the folder of its features, shared
        by the methods that extract alike and match differently (matcher, view matches)."""
        return f"{self.family}-features-{hashlib.sha1(self.features_tag.encode()).hexdigest()[:12]}"

    @property
    def loaded(self) -> bool:
        return self._extractor is not None

    def extract(self, path: PathLike) -> ImageFeatures:
        """Features of the image file ``path`` (loads the networks on the first call)."""
        if self._extractor is None:
            try:
                self._extractor = self._make()
            except MethodError:
                raise
            except (ValueError, OSError, RuntimeError) as exc:  # unusable weights, device, ...
                raise MethodError(f"cannot build method {self.name!r}: {str(exc).splitlines()[0]}") from None
        t0 = time.perf_counter()
        kpts, desc, size, _ = extract_image(self._extractor, path, self.max_image_size)
        kpts = as_rows(kpts, np.float64, 4)
        return ImageFeatures(kpts, as_rows(desc, np.float32, 0, len(kpts)), (int(size[0]), int(size[1])),
                             time.perf_counter() - t0)

    def match_pair(self, f1: ImageFeatures, f2: ImageFeatures) -> MatchResult:
        """The pair's matches, the view level they come from and the matching seconds of each
        level tried. Default: :meth:`match` on the features as they are (level 0, one entry:
        the seconds :meth:`match` took). A method matching view levels one after another
        overrides this (and may put the seconds of each level's features in
        ``ImageFeatures.extra["level_seconds"]``)."""
        t0 = time.perf_counter()
        m = self.match(f1, f2)
        return MatchResult(m, 0, (time.perf_counter() - t0,))

    def match(self, f1: ImageFeatures, f2: ImageFeatures) -> np.ndarray:
        """(K, 2) int64 indices of the tentative matches (image 1, image 2); (0, 2) when there
        are none (an image without keypoints included)."""
        if len(f1.keypoints) == 0 or len(f2.keypoints) == 0:
            return np.zeros((0, 2), np.int64)
        k1 = with_scale(f1.keypoints)
        k2 = with_scale(f2.keypoints)
        m, _ = match_descriptors(f1.descriptors, f2.descriptors, self.matcher, k1, k2,
                                 (f1.size[1], f1.size[0]), (f2.size[1], f2.size[0]))
        return as_matches(m)

    def __repr__(self) -> str:
        return f"Method({self.name!r}, {self.cache_name})"


def as_rows(a, dtype, empty_width: int, n: Optional[int] = None) -> np.ndarray:
    """``a`` as a 2-D ``dtype`` array of ``n`` rows (``None``: as many as it has); an empty ``a``
    (no keypoint: OpenCV and the detectors give ``(0,)``, ``[]`` or ``None``) is
    ``(0, empty_width)``, or ``(0, a.shape[1])`` when it is already 2-D."""
    a = np.zeros(0, dtype) if a is None else np.asarray(a, dtype=dtype)
    if a.size == 0:
        return a.reshape(0, a.shape[1] if a.ndim == 2 else empty_width)
    return a.reshape(len(a) if n is None else n, -1)


def as_matches(m) -> np.ndarray:
    """A method's matches as (K, 2) int64; no match at all (``[]``, ``(0,)``, ``None``) is (0, 2).
    Anything else that is not (K, 2) is a ``ValueError``."""
    a = np.zeros((0, 2), np.int64) if m is None else np.asarray(m)
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"matches must be (K, 2) indices, got shape {a.shape}")
    return a.astype(np.int64)


def with_scale(k: np.ndarray) -> np.ndarray:
    """(N, 3) x, y, scale of keypoints (N, >=2) (scale 1 where they have none)."""
    k = as_rows(k, np.float64, 2)
    return k[:, :3] if k.shape[1] >= 3 else np.column_stack([k[:, :2], np.ones(len(k))])
