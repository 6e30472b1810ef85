"""The method of the wide-baseline benchmark: what it is built with (:class:`MethodOptions`),
what it gives (:class:`ImageFeatures`) and how it extracts and matches (:class:`Method`)."""
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
    #: the view index of each keypoint of the view-synthesis methods
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


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
        desc = np.asarray(desc, dtype=np.float32).reshape(len(kpts), -1)
        return ImageFeatures(np.asarray(kpts, dtype=np.float64), desc, (int(size[0]), int(size[1])),
                             time.perf_counter() - t0)

    def match(self, f1: ImageFeatures, f2: ImageFeatures) -> np.ndarray:
        """(K, 2) int64 indices of the tentative matches (image 1, image 2)."""
        k1 = with_scale(f1.keypoints)
        k2 = with_scale(f2.keypoints)
        m, _ = match_descriptors(f1.descriptors, f2.descriptors, self.matcher, k1, k2,
                                 (f1.size[1], f1.size[0]), (f2.size[1], f2.size[0]))
        return m

    def __repr__(self) -> str:
        return f"Method({self.name!r}, {self.cache_name})"


def with_scale(k: np.ndarray) -> np.ndarray:
    """(N, 3) x, y, scale of keypoints (N, >=2) (scale 1 where they have none)."""
    k = np.asarray(k, dtype=np.float64)
    return k[:, :3] if k.shape[1] >= 3 else np.column_stack([k[:, :2], np.ones(len(k))])
