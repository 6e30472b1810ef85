"""Descriptor matching with kornia's matchers, and the feature / match stages of an image
collection (features.h5 and matches.h5 in hloc's layout, resumable).

Matchers (``method``; ``threshold`` means, and defaults to):

========= ============================================== =========================== =========
method    kornia function                                threshold                   default
========= ============================================== =========================== =========
smnn      ``match_smnn``: mutual NN + ratio test both    max. ratio nearest/second   0.9
          ways
snn       ``match_snn``: Lowe's ratio test (one way)     max. ratio nearest/second   0.8
mnn       ``match_mnn``: mutual nearest neighbours       max. L2 distance (None: no  None
                                                         limit)
nn        ``match_nn``: nearest neighbour                max. L2 distance            None
adalam    ``match_adalam``: AdaLAM (local affine         AdaLAM's ``min_confidence`` 200
          verification), LAFs from our keypoints'
          positions and scales
========= ============================================== =========================== =========

The default, ``smnn`` at 0.9, keeps a match only when the two descriptors are each other's
nearest neighbour *and* clearly better than the second neighbour in both directions: the
mutual check alone (``mnn``) lets through the look-alike matches of repeated structure
(precision 0.69 on HSequences), a ratio of 0.8 keeps 16% fewer correct matches than 0.9
for 5 points more precision, 0.95 drops precision to 0.82 (the measurement is in the
README's matching section; the inliers are then found by RANSAC, which needs matches
right but not spotless). ``adalam`` verifies matches by local affine consistency; its
local RANSACs need enough keypoints (thousands) to find seeds.

Every matcher returns ``(matches, scores)``: (K, 2) int64 index pairs (image 0, image 1)
and (K,) float32 scores, the cosine similarity of the matched descriptors (the dot product
of L2-normalised descriptors, higher is better: what hloc's nearest-neighbour matcher
stores in ``matching_scores0``).

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

import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import kornia.feature as KF
import numpy as np
import torch
from tqdm import tqdm

from hardnet.patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, patch_lafs
from keynet.base import twoview
from keynet.base.images import read_image_grey

from . import hloc_io, nearest
from .extraction import Extractor, FeatureConfig, Features, extractor_from_config, write_features_h5
from .pairs import Pair
from .views import (NUM_LEVELS, VIEW_SET_ID, VIEW_SYNTHESIS_MODES, dedup_matches, view_features, view_levels,
                    views_of_level)

PathLike = Union[str, os.PathLike]

MATCHERS = ("smnn", "snn", "mnn", "nn", "adalam")
DEFAULT_MATCHER = "smnn"
DEFAULT_THRESHOLDS: Dict[str, Optional[float]] = {"smnn": 0.9, "snn": 0.8, "mnn": None, "nn": None, "adalam": 200.0}
#: The region a HardNet descriptor describes: the half-width of its LAF per unit of keypoint
#: scale (kornia's pixel-centre convention, :func:`hardnet.patches.patch_lafs`): 32 * 32/31.
LAF_RADIUS_PER_SCALE = DEFAULT_MAGNIFICATION * PATCH_SIZE / 2.0 * PATCH_SIZE / (PATCH_SIZE - 1)
#: AdaLAM's own default (degrees): with oriented features, a match whose change of orientation
#: differs more than this from its seed's is rejected. Upright features disable the check.
ADALAM_ORIENTATION_TOLERANCE = 30.0
#: MODS's stopping rule (Mishkin, Matas & Perdoch 2015): a pair is matched once geometric
#: verification keeps at least this many correspondences; below it, view synthesis goes on.
DEFAULT_MIN_INLIERS = 15
#: Geometric verification of view-synthesis matches: the largest epipolar distance (px, full
#: resolution) of an inlier of the fundamental matrix. 2 px, not the 1 px of ``keynet demo``:
#: the back-mapped position of a tilt-t view is t times less precise across the tilt.
VERIFY_THRESHOLD = 2.0
#: Images whose features :func:`match_pairs` keeps in memory (the most recently used):
#: pairs are matched in the order given, so exhaustive and sequential pairs reread little, and
#: memory stays bounded on a collection of any size.
FEATURE_CACHE_IMAGES = 64
#: FGINN's radius (px, kornia's and MODS's 10): neighbours of the nearest one closer than this
#: are the same structure, not competitors in the ratio test (view-synthesis unions).
FGINN_RADIUS = 10.0


class MatchingError(RuntimeError):
    """The feature or matching stage cannot proceed (message names the culprit)."""


@dataclass
class MatcherConfig:
    """Descriptor matcher: ``method`` (one of :data:`MATCHERS`) and its ``threshold``
    (``None``: the method's default, :data:`DEFAULT_THRESHOLDS`); ``view_synthesis``
    (:data:`~keynet.pipeline.views.VIEW_SYNTHESIS_MODES`: ``none``, ``auto``, ``full``; the
    module doc) and ``min_inliers``, the verified matches at which ``auto`` stops adding views
    (MODS's 15)."""

    method: str = DEFAULT_MATCHER
    threshold: Optional[float] = None
    view_synthesis: str = "none"
    min_inliers: int = DEFAULT_MIN_INLIERS

    def __post_init__(self) -> None:
        if self.method not in MATCHERS:
            raise ValueError(f"unknown matcher {self.method!r}; choose one of {', '.join(MATCHERS)}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"the matcher threshold must be > 0, got {self.threshold}")
        if self.view_synthesis not in VIEW_SYNTHESIS_MODES:
            raise ValueError(f"unknown view synthesis {self.view_synthesis!r}; choose one of "
                             f"{', '.join(VIEW_SYNTHESIS_MODES)}")
        if int(self.min_inliers) != self.min_inliers or self.min_inliers < 1:
            raise ValueError(f"min_inliers must be a positive integer, got {self.min_inliers}")

    @property
    def views(self) -> bool:
        """Whether the matching uses synthesised views."""
        return self.view_synthesis != "none"

    @property
    def resolved_threshold(self) -> Optional[float]:
        return DEFAULT_THRESHOLDS[self.method] if self.threshold is None else float(self.threshold)


def lafs_from_keypoints(kpts: np.ndarray, orientations: Optional[np.ndarray] = None,
                        shapes: Optional[np.ndarray] = None) -> torch.Tensor:
    """(1, N, 2, 3) kornia LAFs of the regions HardNet describes, for AdaLAM: the one LAF
    builder :func:`hardnet.patches.patch_lafs` (centre (x, y), upright or turned by
    ``orientations``, (N,) degrees in the project's convention; kornia's LAF angle is its
    negative; through the affine ``shapes`` (N, 2, 2) when given). ``kpts``: (N, >=3) x, y, scale."""
    k = torch.as_tensor(np.asarray(kpts, dtype=np.float32))
    ori = None if orientations is None else torch.deg2rad(torch.as_tensor(np.asarray(orientations, np.float32)))
    shp = None if shapes is None else torch.as_tensor(np.asarray(shapes, np.float32))
    return patch_lafs(k, ori, shapes=shp)


def _tensor(d: np.ndarray, name: str) -> torch.Tensor:
    a = np.asarray(d, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, config: Optional[MatcherConfig] = None,
                      kpts0: Optional[np.ndarray] = None, kpts1: Optional[np.ndarray] = None,
                      hw0: Optional[Sequence[int]] = None, hw1: Optional[Sequence[int]] = None,
                      ori0: Optional[np.ndarray] = None, ori1: Optional[np.ndarray] = None,
                      lafs0: Optional[np.ndarray] = None, lafs1: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Match two descriptor sets (N0, D) and (N1, D).

    ``kpts0``/``kpts1`` ((N, >=3) x, y, scale) and the image sizes ``hw0``/``hw1``
    (rows, cols) are needed by ``adalam`` only; with the keypoint orientations ``ori0``/``ori1``
    ((N,) degrees, oriented features) AdaLAM also checks that a match turns its region as its
    neighbours do (its default tolerance, :data:`ADALAM_ORIENTATION_TOLERANCE`); ``lafs0``/``lafs1``
    ((N, 2, 3), the whole frames of features with an affine shape) replace the frames built
    from the keypoints. Returns
    ``(matches (K, 2) int64, scores (K,) float32 cosine similarities)``, sorted by the index in image 0.
    """
    cfg = config or MatcherConfig()
    d0, d1 = _tensor(desc0, "desc0"), _tensor(desc1, "desc1")
    if d0.shape[1] != d1.shape[1]:
        raise ValueError(f"descriptor sizes differ: {d0.shape[1]} and {d1.shape[1]}")
    empty = (np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if len(d0) == 0 or len(d1) == 0:
        return empty
    th = cfg.resolved_threshold
    with torch.no_grad():
        if cfg.method == "adalam":
            if kpts0 is None or kpts1 is None:
                raise ValueError("the adalam matcher needs the keypoints (x, y, scale) of both images")
            if len(d0) < 2 or len(d1) < 2:
                return empty
            oriented = ori0 is not None and ori1 is not None
            conf = {"min_confidence": th, "device": d0.device,
                    "orientation_difference_threshold": ADALAM_ORIENTATION_TOLERANCE if oriented else None}
            if lafs0 is not None and lafs1 is not None:
                la0 = torch.as_tensor(np.asarray(lafs0, np.float32)).reshape(1, -1, 2, 3)
                la1 = torch.as_tensor(np.asarray(lafs1, np.float32)).reshape(1, -1, 2, 3)
            else:
                la0 = lafs_from_keypoints(kpts0, ori0 if oriented else None)
                la1 = lafs_from_keypoints(kpts1, ori1 if oriented else None)
            _, idx = KF.match_adalam(d0, d1, la0, la1, config=conf, hw1=hw0, hw2=hw1)
        elif nearest.needs_blocks(len(d0), len(d1)):  # kornia's matches in bounded memory
            if cfg.method in ("smnn", "snn"):
                _, idx = (nearest.smnn if cfg.method == "smnn" else nearest.snn)(d0, d1, th)
            else:
                dist, idx = (nearest.mnn if cfg.method == "mnn" else nearest.nn)(d0, d1)
                if th is not None:
                    idx = idx[dist <= th]
        elif cfg.method in ("smnn", "snn"):
            fn = KF.match_smnn if cfg.method == "smnn" else KF.match_snn
            _, idx = fn(d0, d1, th)
        else:
            fn = KF.match_mnn if cfg.method == "mnn" else KF.match_nn
            dist, idx = fn(d0, d1)
            if th is not None:
                idx = idx[dist[:, 0] <= th]
    m = idx.cpu().numpy().astype(np.int64).reshape(-1, 2)
    m = m[np.argsort(m[:, 0], kind="stable")]
    return m, _cosine(d0, d1, m)


def _cosine(d0: torch.Tensor, d1: torch.Tensor, m: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", d0.numpy()[m[:, 0]], d1.numpy()[m[:, 1]]).astype(np.float32)


# ----------------------------------------------------------------------------- view synthesis
def match_union(kpts0: np.ndarray, desc0: np.ndarray, lafs0: np.ndarray, kpts1: np.ndarray, desc1: np.ndarray,
                lafs1: np.ndarray, hw0: Sequence[int], hw1: Sequence[int], config: Optional[MatcherConfig] = None,
                ori0: Optional[np.ndarray] = None, ori1: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Tentative matches of two unions of view features (the module doc): ``smnn`` / ``snn``
    as FGINN (mutual in both directions / one way, the matcher's ratio, :data:`FGINN_RADIUS`
    px), the other matchers as :func:`match_descriptors` on the whole frames ``lafs0`` /
    ``lafs1`` ((N, 2, 3)). Returns ``(matches (K, 2), scores (K,))`` sorted by the index in image 0."""
    cfg = config or MatcherConfig()
    if cfg.method not in ("smnn", "snn"):
        return match_descriptors(desc0, desc1, cfg, kpts0, kpts1, hw0, hw1, ori0, ori1, lafs0, lafs1)
    d0, d1 = _tensor(desc0, "desc0"), _tensor(desc1, "desc1")
    if d0.shape[1] != d1.shape[1]:
        raise ValueError(f"descriptor sizes differ: {d0.shape[1]} and {d1.shape[1]}")
    if len(d0) < 2 or len(d1) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    la0 = torch.as_tensor(np.asarray(lafs0, np.float32)).reshape(1, -1, 2, 3)
    la1 = torch.as_tensor(np.asarray(lafs1, np.float32)).reshape(1, -1, 2, 3)
    th = cfg.resolved_threshold
    mutual = cfg.method == "smnn"
    with torch.no_grad():
        _, idx = _fginn(d0, d1, la0, la1, th, mutual)
        m = idx.cpu().numpy().astype(np.int64).reshape(-1, 2)
        if mutual:  # the ratio test seen from image 1 too, as smnn
            _, back = _fginn(d1, d0, la1, la0, th, True)
            b = back.cpu().numpy().astype(np.int64).reshape(-1, 2)
            n1 = len(d1)
            m = m[np.isin(m[:, 0] * n1 + m[:, 1], b[:, 1] * n1 + b[:, 0])]
    m = m[np.argsort(m[:, 0], kind="stable")]
    return m, _cosine(d0, d1, m)


def _fginn(d0: torch.Tensor, d1: torch.Tensor, la0: torch.Tensor, la1: torch.Tensor, th: float,
           mutual: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """kornia's FGINN (:data:`FGINN_RADIUS`), in blocks above :data:`nearest.MAX_DISTANCE_ENTRIES`."""
    if nearest.needs_blocks(len(d0), len(d1)):
        return nearest.fginn(d0, d1, la1[0, :, :, 2], th, FGINN_RADIUS, mutual)
    return KF.match_fginn(d0, d1, la0, la1, th, FGINN_RADIUS, mutual=mutual)


def verify_matches(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, scores: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the duplicates among the matches of two view unions
    (:func:`keynet.pipeline.views.dedup_matches`) and verify the rest with a fundamental matrix
    (MAGSAC++ where OpenCV has it, :data:`VERIFY_THRESHOLD` px): ``(matches, scores, inliers
    (K,) bool)``, the order kept."""
    m = np.asarray(matches, np.int64).reshape(-1, 2)
    xy0, xy1 = kpts0[m[:, 0], :2], kpts1[m[:, 1], :2]
    keep = dedup_matches(xy0, xy1, scores)
    m, sc = m[keep], np.asarray(scores, np.float32)[keep]
    fit = twoview.estimate_fundamental(xy0[keep], xy1[keep], threshold=VERIFY_THRESHOLD)
    return m, sc, fit.inliers


def match_view_levels(get0: Callable[[int], Dict[str, np.ndarray]], get1: Callable[[int], Dict[str, np.ndarray]],
                      config: MatcherConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """MODS's iteration over the view levels of two images. ``get0(level)`` / ``get1(level)``:
    the union of the views of levels ``0..level`` of an image as ``{'kpts' (N, >=3), 'desc',
    'lafs' (N, 2, 3), 'ori' ((N,) or None: not checked), 'hw' (rows, cols)}``, each level's
    keypoints after those of the levels below (so indices stay valid as levels are added).
    ``auto``: levels 0, 1, ... until the verified matches reach ``min_inliers`` (or the last
    level); ``full``: the last level at once. Returns ``(matches, scores, inliers, level)``:
    the merged tentative matches (indices into the union of levels ``0..level``), the mask of
    the verified ones, and the last level matched."""
    last = NUM_LEVELS - 1
    levels = range(NUM_LEVELS) if config.view_synthesis == "auto" else [last]
    for level in levels:
        a, b = get0(level), get1(level)
        m, sc = match_union(a["kpts"], a["desc"], a["lafs"], b["kpts"], b["desc"], b["lafs"], a["hw"], b["hw"],
                            config, a["ori"], b["ori"])
        m, sc, inl = verify_matches(a["kpts"], b["kpts"], m, sc)
        if inl.sum() >= config.min_inliers:
            break
    return m, sc, inl, level


# ----------------------------------------------------------------------------- features stage
def build_extractor(cfg: FeatureConfig) -> Extractor:
    """Key.Net + HardNet per ``cfg`` (:class:`MatchingError` without descriptor weights)."""
    ex = extractor_from_config(cfg)
    if ex.descriptor is None:
        raise MatchingError(f"no HardNet weights ({cfg.descriptor!r}): matching needs descriptors; "
                            "pass a HardNet weights file")
    return ex


def read_for_extraction(path: PathLike, max_image_size: int) -> Tuple[np.ndarray, Tuple[float, float], Tuple[int, int]]:
    """Grey image (official conversion), downscaled by area averaging so that its longest
    side is at most ``max_image_size`` (0: unchanged). Returns ``(image, (sx, sy),
    (width, height) of the original)``; full-resolution pixel = (small + 0.5) * s - 0.5."""
    img = read_image_grey(path)
    h, w = img.shape[:2]
    if max_image_size and max(h, w) > max_image_size:
        f = max_image_size / float(max(h, w))
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        return img, (w / nw, h / nh), (w, h)
    return img, (1.0, 1.0), (w, h)


def image_features(extractor: Extractor, path: PathLike, max_image_size: int) -> Features:
    """:class:`Features` of one image file, computed at most ``max_image_size`` px on the
    longest side and given in full-resolution pixels (integer pixel centres; the affine shapes
    are scale-free and carry over). ``image_size`` is the file's (width, height)."""
    img, s, size = read_for_extraction(path, max_image_size)
    # errors name the file (other extractors of the benchmarks take the image alone)
    f = extractor.features(img, name=str(path)) if isinstance(extractor, Extractor) else extractor.features(img)
    return Features(_full_resolution(f.keypoints, s), f.descriptors, f.orientations, size, f.shapes)


def _full_resolution(keypoints: np.ndarray, s: Tuple[float, float]) -> np.ndarray:
    """Keypoints of the working image -> the file's pixels (:func:`read_for_extraction`)."""
    sx, sy = s
    kpts = np.array(keypoints, dtype=np.float64, copy=True)
    if (sx, sy) != (1.0, 1.0):
        kpts[:, 0] = (kpts[:, 0] + 0.5) * sx - 0.5
        kpts[:, 1] = (kpts[:, 1] + 0.5) * sy - 0.5
        kpts[:, 2] *= 0.5 * (sx + sy)
    return kpts


class ViewedImage:
    """An image file read once for view synthesis, its features computed level by level
    (:mod:`keynet.pipeline.views`) and kept: :meth:`features` gives the union of the levels
    ``0..level`` in full-resolution pixels with the per-keypoint view index."""

    def __init__(self, extractor: Extractor, path: PathLike, max_image_size: int) -> None:
        self.extractor = extractor
        self.name = str(path)
        self.image, self.s, self.size = read_for_extraction(path, max_image_size)
        self._levels: List[Tuple[Features, np.ndarray]] = []

    def features(self, level: int = NUM_LEVELS - 1) -> Tuple[Features, np.ndarray]:
        while len(self._levels) <= level:
            f, v = view_features(self.extractor, self.image, views_of_level(len(self._levels)), name=self.name)
            self._levels.append((Features(_full_resolution(f.keypoints, self.s), f.descriptors, f.orientations,
                                          self.size, f.shapes), v))
        return concat_features(self._levels[: level + 1])


def concat_features(parts: Sequence[Tuple[Features, np.ndarray]]) -> Tuple[Features, np.ndarray]:
    """One :class:`Features` (and view index) of several with shapes and orientations."""
    fs = [p[0] for p in parts]
    desc = None if fs[0].descriptors is None else np.concatenate([f.descriptors for f in fs]).astype(np.float32)
    return (Features(np.concatenate([f.keypoints for f in fs]).reshape(-1, 4), desc,
                     np.concatenate([f.orientations for f in fs]), fs[0].image_size,
                     np.concatenate([f.shapes for f in fs])),
            np.concatenate([p[1] for p in parts]))


def image_view_features(extractor: Extractor, path: PathLike, max_image_size: int,
                        level: int = NUM_LEVELS - 1) -> Tuple[Features, np.ndarray]:
    """The union of the features of the views of levels ``0..level`` of an image file
    (:func:`keynet.pipeline.views.view_features`) in full-resolution pixels, and the
    per-keypoint view index; level 0 alone is :func:`image_features` plus identity shapes and
    zero orientations."""
    return ViewedImage(extractor, path, max_image_size).features(level)


def extract_image(extractor: Extractor, path: PathLike, max_image_size: int
                  ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], Optional[np.ndarray]]:
    """Keypoints (N, 4) x, y, scale, score in full-resolution pixels (integer pixel
    centres), descriptors (N, D), the (width, height) of one image file and the keypoint
    orientations (N,) in degrees (None for upright features); :func:`image_features` has the
    affine shapes too."""
    f = image_features(extractor, path, max_image_size)
    return f.keypoints, f.descriptors, f.image_size, f.orientations


@dataclass
class StageSummary:
    """What a features / matches stage did."""

    done: List[str] = field(default_factory=list)
    reused: List[str] = field(default_factory=list)
    seconds: float = 0.0
    #: images skipped: ``(name, reason)`` (unreadable, or too small for Key.Net)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def usable(self, names: Sequence[str]) -> List[str]:
        """``names`` without the failed images, in their order."""
        bad = {n for n, _ in self.failed}
        return [n for n in names if n not in bad]


def features_fingerprint(cfg: FeatureConfig, view_synthesis: str = "none") -> str:
    """The ``extractor`` attribute of a ``features.h5``: :meth:`FeatureConfig.fingerprint`,
    plus the view set when the file holds the views (``auto`` and ``full`` store the same
    union of all levels)."""
    fp = cfg.fingerprint()
    if view_synthesis == "none":
        return fp
    if view_synthesis not in VIEW_SYNTHESIS_MODES:
        raise ValueError(f"unknown view synthesis {view_synthesis!r}; choose one of {', '.join(VIEW_SYNTHESIS_MODES)}")
    d = json.loads(fp)
    d["views"] = VIEW_SET_ID
    return json.dumps(d, sort_keys=True)


def extract_features(image_dir: PathLike, names: Sequence[str], features_path: PathLike, cfg: FeatureConfig,
                     extractor: Optional[Extractor] = None, overwrite: bool = False,
                     progress: bool = True, view_synthesis: str = "none", strict: bool = False) -> StageSummary:
    """Features of every image ``image_dir/name`` into ``features_path`` (hloc layout).

    Resumable: images already in the file with the same :class:`FeatureConfig` are reused
    (each image's group is flushed as soon as it is written; a group left incomplete by an
    interruption is recomputed). A file written with other settings is started again.
    ``view_synthesis`` ``auto`` / ``full``: each image's group holds the union of the
    features of all levels of views (:func:`image_view_features`: keypoints mapped back,
    descriptors, ``lafs`` and a ``views`` dataset, the per-keypoint view index; hloc's keys
    unchanged), which :func:`match_pairs` matches level by level.
    An image that cannot be read or is too small for Key.Net is skipped with one warning line
    naming it and listed in ``failed`` (:meth:`StageSummary.usable` gives the others);
    ``strict``: it raises instead (:class:`keynet.base.images.ImageReadError`,
    :class:`keynet.detection.ImageTooSmallError`).
    """
    fp = features_fingerprint(cfg, view_synthesis)
    viewed = view_synthesis != "none"
    state = {"extractor": extractor}

    def compute(path: Path) -> Tuple[Features, Optional[np.ndarray]]:
        if state["extractor"] is None:
            state["extractor"] = build_extractor(cfg)
        if not viewed:
            return image_features(state["extractor"], path, cfg.max_image_size), None
        f, views = image_view_features(state["extractor"], path, cfg.max_image_size)
        return f, views

    run = write_features_h5(features_path, [(n, Path(image_dir) / n) for n in names], compute, fingerprint=fp,
                            overwrite=overwrite, progress=progress, desc="features" + (" (views)" if viewed else ""),
                            require="views" if viewed else None, strict=strict,
                            orientations=not viewed or cfg.oriented)
    return StageSummary(done=run.written, reused=run.skipped, seconds=run.seconds, failed=run.failed)


def match_pairs(pairs: Sequence[Pair], features_path: PathLike, matches_path: PathLike,
                config: Optional[MatcherConfig] = None, overwrite: bool = False, progress: bool = True,
                export_dir: Optional[PathLike] = None) -> StageSummary:
    """Match every pair with the features of ``features_path`` into ``matches_path``
    (hloc layout). Pairs already matched with the same matcher on the same features are
    reused. With ``export_dir``, each pair is also written as
    ``<export_dir>/<name0>__<name1>.npz`` (``/`` in names -> ``-``): ``matches`` (K, 2),
    ``scores`` (K,), ``keypoints0``/``keypoints1`` (K, 2) matched pixel coordinates.

    With ``config.view_synthesis`` (features written by :func:`extract_features` with view
    synthesis): each pair is matched by :func:`match_view_levels` (``auto``: level 0 first,
    the next level added while the verified matches are fewer than ``config.min_inliers``)
    and only the verified matches are written."""
    cfg = config or MatcherConfig()
    t0 = time.time()
    summary = StageSummary()
    with hloc_io.open_h5(features_path, "r") as ff:
        fp = {"matcher": cfg.method, "threshold": cfg.resolved_threshold,
              "features": str(ff.attrs.get("extractor", ""))}
        if cfg.method == "adalam":  # AdaLAM checks the orientations of oriented features (since v2)
            fp["adalam"] = 2
        if cfg.views:  # absent without view synthesis: the caches made before it was an option
            fp.update({"views": cfg.view_synthesis, "min_inliers": int(cfg.min_inliers), "fginn": FGINN_RADIUS,
                       "verification": f"F {twoview.DEFAULT_METHOD} {VERIFY_THRESHOLD} px, dedup"})
        fp = json.dumps(fp, sort_keys=True)
        cache: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()  # the most recently used images

        def feats(name: str) -> Dict[str, np.ndarray]:
            if name in cache:
                cache.move_to_end(name)
            else:
                while len(cache) >= FEATURE_CACHE_IMAGES:  # bounded memory on any collection
                    cache.popitem(last=False)
                try:
                    cache[name] = hloc_io.read_features(ff, name)
                except KeyError:
                    raise MatchingError(f"no features for image {name} in {features_path}") from None
                if "descriptors" not in cache[name]:
                    raise MatchingError(f"no descriptors for image {name} in {features_path}")
                if cfg.views:
                    if "views" not in ff[name] or "lafs" not in cache[name]:
                        raise MatchingError(f"the features of {name} in {features_path} were extracted without "
                                            "view synthesis; extract them with it (the same --view-synthesis)")
                    cache[name]["views"] = ff[name]["views"][()].astype(np.int64)
            return cache[name]

        def levels(f: Dict[str, np.ndarray]) -> Callable[[int], Dict[str, np.ndarray]]:
            lv = view_levels(f["views"])
            k = _with_scales(f)

            def upto(level: int) -> Dict[str, np.ndarray]:
                n = int(np.sum(lv <= level))  # the levels are stored in order: a prefix
                ori = f.get("orientations")
                return {"kpts": k[:n], "desc": f["descriptors"][:n], "lafs": f["lafs"][:n],
                        "ori": None if ori is None else ori[:n], "hw": tuple(f["image_size"][::-1])}
            return upto

        with hloc_io.open_h5(matches_path, "a") as fm:
            if overwrite or fm.attrs.get("matcher", fp) != fp:
                for k in list(fm.keys()):
                    del fm[k]
            fm.attrs["matcher"] = fp
            bar = tqdm(pairs, desc=f"match ({cfg.method})", unit="pair", disable=not progress)
            for a, b in bar:
                key = f"{a} {b}"
                if hloc_io.has_matches(fm, a, b) and export_dir is None:
                    summary.reused.append(key)
                    continue
                fa, fb = feats(a), feats(b)
                if hloc_io.has_matches(fm, a, b):
                    m, s = hloc_io.read_matches(fm, a, b)
                    summary.reused.append(key)
                elif cfg.views:
                    m, s, inl, level = match_view_levels(levels(fa), levels(fb), cfg)
                    m, s = m[inl], s[inl]
                    hloc_io.write_matches(fm, a, b, m, s, len(fa["keypoints"]))
                    summary.done.append(key)
                    bar.set_postfix(matches=len(m), level=level)
                else:
                    ka = _with_scales(fa)
                    kb = _with_scales(fb)
                    m, s = match_descriptors(fa["descriptors"], fb["descriptors"], cfg, ka, kb,
                                             fa["image_size"][::-1], fb["image_size"][::-1],
                                             fa.get("orientations"), fb.get("orientations"), fa.get("lafs"),
                                             fb.get("lafs"))
                    hloc_io.write_matches(fm, a, b, m, s, len(fa["keypoints"]))
                    summary.done.append(key)
                    bar.set_postfix(matches=len(m))
                if export_dir is not None:
                    out = Path(export_dir) / (hloc_io.names_to_pair(a, b, "__") + ".npz")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(out, matches=m, scores=s, keypoints0=fa["keypoints"][m[:, 0]],
                             keypoints1=fb["keypoints"][m[:, 1]])
            cache.clear()
    summary.seconds = time.time() - t0
    return summary


def _with_scales(f: Dict[str, np.ndarray]) -> np.ndarray:
    k = f["keypoints"]
    s = f.get("scales", np.ones(len(k)))
    return np.column_stack([k, s])


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
    matrix) and ``levels_used`` (the levels matched are ``0..levels_used``)."""
    fcfg = feature_config or FeatureConfig()
    mcfg = matcher or MatcherConfig()
    if view_synthesis is not None or min_inliers is not None:
        mcfg = replace(mcfg, view_synthesis=mcfg.view_synthesis if view_synthesis is None else view_synthesis,
                       min_inliers=mcfg.min_inliers if min_inliers is None else min_inliers)
    ex = extractor or build_extractor(fcfg)
    if mcfg.views:
        return _match_image_views(ex, image0, image1, fcfg, mcfg)
    f0 = image_features(ex, image0, fcfg.max_image_size)
    f1 = image_features(ex, image1, fcfg.max_image_size)
    (w0, h0), (w1, h1) = f0.image_size, f1.image_size
    shaped = f0.shapes is not None and f1.shapes is not None
    m, sc = match_descriptors(f0.descriptors, f1.descriptors, mcfg, f0.keypoints, f1.keypoints, (h0, w0),
                              (h1, w1), f0.orientations, f1.orientations,
                              f0.lafs()[0].numpy() if shaped else None, f1.lafs()[0].numpy() if shaped else None)
    out = {"kpts0": f0.keypoints, "kpts1": f1.keypoints, "matches": m, "scores": sc, "size0": np.array(f0.image_size),
           "size1": np.array(f1.image_size)}
    if shaped:
        out["lafs0"], out["lafs1"] = f0.lafs()[0].numpy(), f1.lafs()[0].numpy()
    return out


def _match_image_views(ex: Extractor, image0: PathLike, image1: PathLike, fcfg: FeatureConfig,
                       mcfg: MatcherConfig) -> Dict[str, np.ndarray]:
    images = [ViewedImage(ex, p, fcfg.max_image_size) for p in (image0, image1)]
    union: Dict[int, Tuple[Features, np.ndarray, np.ndarray]] = {}

    def source(i: int) -> Callable[[int], Dict[str, np.ndarray]]:
        def upto(level: int) -> Dict[str, np.ndarray]:
            f, v = images[i].features(level)
            lafs = f.lafs()[0].numpy()
            union[i] = (f, v, lafs)
            return {"kpts": f.keypoints, "desc": f.descriptors, "lafs": lafs,
                    "ori": f.orientations if fcfg.oriented else None, "hw": f.image_size[::-1]}
        return upto

    m, sc, inl, level = match_view_levels(source(0), source(1), mcfg)
    (f0, v0, l0), (f1, v1, l1) = union[0], union[1]
    return {"kpts0": f0.keypoints, "kpts1": f1.keypoints, "matches": m, "scores": sc,
            "size0": np.array(f0.image_size), "size1": np.array(f1.image_size), "lafs0": l0, "lafs1": l1,
            "views0": v0, "views1": v1, "inliers": inl, "levels_used": level}


__all__ = [
    "DEFAULT_MATCHER", "DEFAULT_MIN_INLIERS", "DEFAULT_THRESHOLDS", "FGINN_RADIUS", "FeatureConfig", "MATCHERS",
    "MatcherConfig", "MatchingError", "StageSummary", "VERIFY_THRESHOLD", "ViewedImage", "build_extractor",
    "concat_features", "extract_features", "extract_image", "features_fingerprint", "image_features",
    "image_view_features", "lafs_from_keypoints", "match_descriptors", "match_images", "match_pairs",
    "match_union", "match_view_levels", "read_for_extraction", "verify_matches",
]
