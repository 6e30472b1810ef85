"""Two image files matched (:func:`match_images`, the Python API behind ``keynet demo``).

This module is also the old import path of the matching names, re-exported unchanged from
where they live now:

* :mod:`keynet.pipeline.matchers`: the matcher registry, ``match_descriptors``,
  ``match_union``, ``lafs_from_keypoints``, ``MATCHERS``, ``DEFAULT_THRESHOLDS``, ...;
* :mod:`keynet.pipeline.config`: ``FeatureConfig``, ``MatcherConfig``, ``DEFAULT_MIN_INLIERS``;
* :mod:`keynet.pipeline.views`: ``ViewedImage``, ``match_view_levels``, ``verify_matches``,
  ``concat_features``, ``image_view_features``, ``VERIFY_THRESHOLD``;
* :mod:`keynet.pipeline.extraction`: ``build_extractor``, ``image_features``,
  ``extract_image``, ``read_for_extraction``, ``MatchingError``;
* :mod:`keynet.pipeline.stages`: ``extract_features``, ``match_pairs``, ``StageSummary``,
  ``features_fingerprint``.

View synthesis (``MatcherConfig.view_synthesis``, :mod:`keynet.pipeline.views`; ASIFT / MODS)
matches, for extreme viewpoint changes, the union of the features of affine views of both
images mapped back to the images: ``none`` (the plain images, the pipeline without it),
``full`` (all levels of views at once) or ``auto`` (MODS's iteration: level 0, the plain
images, then the next level's views added to both images while the verified matches stay
below ``min_inliers``). A union is matched with the chosen matcher, ``smnn`` / ``snn`` as
kornia's FGINN (``match_fginn``, MODS's "first geometrically inconsistent nearest
neighbour": the second neighbour of the ratio test is the nearest one more than
:data:`FGINN_RADIUS` px away from the first, so that the same region found in several views
is not its own competitor; ``smnn`` = mutual FGINN in both directions), the matches found
in several views merged (:func:`keynet.pipeline.views.dedup_matches`, best score first,
both endpoints within 2 px) and verified by a fundamental matrix (MAGSAC++,
:func:`keynet.base.twoview.estimate_fundamental`, :data:`VERIFY_THRESHOLD` px).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from .config import DEFAULT_MIN_INLIERS, FeatureConfig, MatcherConfig
from .extraction import (Extractor, Features, MatchingError, build_extractor, extract_image, image_features,
                         read_for_extraction)
from .matchers import (ADALAM_ORIENTATION_TOLERANCE, DEFAULT_MATCHER, DEFAULT_THRESHOLDS, FGINN_RADIUS,
                       LAF_RADIUS_PER_SCALE, MATCHERS, lafs_from_keypoints, match_descriptors, match_union)
from .stages import FEATURE_CACHE_IMAGES, StageSummary, extract_features, features_fingerprint, match_pairs
from .cascade import CASCADE_VIEWS, match_cascade
from .views import (VERIFY_THRESHOLD, ViewedImage, concat_features, image_view_features, match_view_levels,
                    verify_matches, view_levels)

PathLike = Union[str, os.PathLike]


def match_images(image0: PathLike, image1: PathLike, extractor: Optional[Extractor] = None,
                 feature_config: Optional[FeatureConfig] = None, matcher: Optional[MatcherConfig] = None,
                 view_synthesis: Optional[str] = None, min_inliers: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Two image files -> ``{'kpts0', 'kpts1' (N, 4), 'matches' (K, 2), 'scores' (K,),
    'size0', 'size1' (width, height)}`` (the Python API behind ``keynet demo``).

    ``view_synthesis`` / ``min_inliers`` (``None``: ``matcher``'s, default ``'none'`` / 15):
    ``'auto'`` or ``'full'`` match the unions of synthesised views (module doc,
    :func:`match_view_levels`; ``auto`` computes a level's views only when the levels below
    did not give ``min_inliers`` verified matches). Then ``kpts0``/``kpts1`` are the union
    (full-resolution pixels) of the levels matched, ``matches``/``scores`` the merged
    tentative matches, and the dict also has ``lafs0``/``lafs1`` (N, 2, 3) whole frames,
    ``views0``/``views1`` (N,) the view index of each keypoint (0 = the plain image,
    :data:`keynet.pipeline.views.VIEWS`), ``inliers`` (K,) bool (verified by the fundamental
    matrix) and ``levels_used`` (the levels matched are ``0..levels_used``).

    ``'cascade'`` (the wide-baseline mode, :mod:`keynet.pipeline.cascade`): the plain pair
    first; ``matches`` are the plain pipeline's tentative matches when its geometry passes or
    when no level passes, else the verified matches of the first view level that passes
    (``levels_used``); the dict also has ``passed``, ``levels_tried``, ``checks`` (one
    :class:`~keynet.pipeline.cascade.LevelCheck` per level tried) and ``level_seconds``."""
    fcfg = feature_config or FeatureConfig()
    mcfg = matcher or MatcherConfig()
    mcfg = mcfg.with_views(view_synthesis, min_inliers)
    ex = extractor or build_extractor(fcfg)
    if mcfg.cascade:
        return _match_image_cascade(ex, image0, image1, fcfg, mcfg)
    if mcfg.views:
        return _match_image_views(ex, image0, image1, fcfg, mcfg)
    f0 = image_features(ex, image0, fcfg.max_image_size)
    f1 = image_features(ex, image1, fcfg.max_image_size)
    m, sc = match_plain(f0, f1, mcfg)
    out = {"kpts0": f0.keypoints, "kpts1": f1.keypoints, "matches": m, "scores": sc, "size0": np.array(f0.image_size),
           "size1": np.array(f1.image_size)}
    if f0.shapes is not None and f1.shapes is not None:
        out["lafs0"], out["lafs1"] = f0.lafs()[0].numpy(), f1.lafs()[0].numpy()
    return out


def match_plain(f0: Features, f1: Features, mcfg: MatcherConfig) -> Tuple[np.ndarray, np.ndarray]:
    """The plain pipeline's matches of two images' features (whole frames where both have an
    affine shape): ``(matches (K, 2), scores (K,))``."""
    (w0, h0), (w1, h1) = f0.image_size, f1.image_size
    shaped = f0.shapes is not None and f1.shapes is not None
    return match_descriptors(f0.descriptors, f1.descriptors, mcfg, f0.keypoints, f1.keypoints, (h0, w0),
                             (h1, w1), f0.orientations, f1.orientations,
                             f0.lafs()[0].numpy() if shaped else None, f1.lafs()[0].numpy() if shaped else None)


def _viewed_source(image: ViewedImage, union: Dict[int, Tuple[Features, np.ndarray, np.ndarray]], i: int,
                   oriented: bool) -> Callable[[int], Dict[str, np.ndarray]]:
    """``get(level)`` of the view matching: the union of an image's levels ``0..level``,
    kept in ``union[i]`` (the last one asked)."""
    def upto(level: int) -> Dict[str, np.ndarray]:
        f, v = image.features(level)
        lafs = f.lafs()[0].numpy()
        union[i] = (f, v, lafs)
        return {"kpts": f.keypoints, "desc": f.descriptors, "lafs": lafs,
                "ori": f.orientations if oriented else None, "hw": f.image_size[::-1]}
    return upto


def _match_image_cascade(ex: Extractor, image0: PathLike, image1: PathLike, fcfg: FeatureConfig,
                         mcfg: MatcherConfig) -> Dict[str, np.ndarray]:
    images = [ViewedImage(ex, p, fcfg.max_image_size, CASCADE_VIEWS) for p in (image0, image1)]
    union: Dict[int, Tuple[Features, np.ndarray, np.ndarray]] = {}
    get0, get1 = (_viewed_source(images[i], union, i, fcfg.oriented) for i in (0, 1))
    res = match_cascade(lambda: match_plain(images[0].plain, images[1].plain, mcfg), get0, get1, mcfg)
    (f0, v0, l0), (f1, v1, l1) = union[0], union[1]
    if res.level < max(union_level(v0), union_level(v1)):  # the answer is level 0's: its features alone
        n0, n1 = int(np.sum(v0 == 0)), int(np.sum(v1 == 0))
        f0, v0, l0 = _prefix(f0, n0), v0[:n0], l0[:n0]
        f1, v1, l1 = _prefix(f1, n1), v1[:n1], l1[:n1]
    return {"kpts0": f0.keypoints, "kpts1": f1.keypoints, "matches": res.matches, "scores": res.scores,
            "size0": np.array(f0.image_size), "size1": np.array(f1.image_size), "lafs0": l0, "lafs1": l1,
            "views0": v0, "views1": v1, "inliers": res.inliers, "levels_used": res.level,
            "levels_tried": len(res.checks) - 1, "passed": res.passed, "checks": res.checks,
            "level_seconds": np.array([images[0].level_seconds[i] + images[1].level_seconds[i] + c.seconds
                                       for i, c in enumerate(res.checks)])}


def union_level(views: np.ndarray) -> int:
    """The last view level present in a union's view index (0: the plain image only)."""
    return int(view_levels(views).max()) if len(views) else 0


def _prefix(f: Features, n: int) -> Features:
    return Features(f.keypoints[:n], None if f.descriptors is None else f.descriptors[:n],
                    None if f.orientations is None else f.orientations[:n], f.image_size,
                    None if f.shapes is None else f.shapes[:n])


def _match_image_views(ex: Extractor, image0: PathLike, image1: PathLike, fcfg: FeatureConfig,
                       mcfg: MatcherConfig) -> Dict[str, np.ndarray]:
    images = [ViewedImage(ex, p, fcfg.max_image_size) for p in (image0, image1)]
    union: Dict[int, Tuple[Features, np.ndarray, np.ndarray]] = {}
    m, sc, inl, level = match_view_levels(*(_viewed_source(images[i], union, i, fcfg.oriented) for i in (0, 1)),
                                          mcfg)
    (f0, v0, l0), (f1, v1, l1) = union[0], union[1]
    return {"kpts0": f0.keypoints, "kpts1": f1.keypoints, "matches": m, "scores": sc,
            "size0": np.array(f0.image_size), "size1": np.array(f1.image_size), "lafs0": l0, "lafs1": l1,
            "views0": v0, "views1": v1, "inliers": inl, "levels_used": level}


__all__ = [
    "ADALAM_ORIENTATION_TOLERANCE", "DEFAULT_MATCHER", "DEFAULT_MIN_INLIERS", "DEFAULT_THRESHOLDS",
    "FEATURE_CACHE_IMAGES", "FGINN_RADIUS", "FeatureConfig", "LAF_RADIUS_PER_SCALE", "MATCHERS", "MatcherConfig",
    "MatchingError", "StageSummary", "VERIFY_THRESHOLD", "ViewedImage", "build_extractor", "concat_features",
    "extract_features", "extract_image", "features_fingerprint", "image_features", "image_view_features",
    "lafs_from_keypoints", "match_descriptors", "match_images", "match_pairs", "match_union", "match_view_levels",
    "read_for_extraction", "verify_matches",
]
