"""View synthesis for extreme viewpoint changes (ASIFT / MODS): the views and their matching.

Affine views of an image, their features mapped back to the image, the merging of the
duplicate matches that several views find, and MODS's matching of two images level by level
(:func:`match_view_levels`, the one place of the rule "the views of levels 0..L").

Views
-----
A view (Morel & Yu, "ASIFT", SIAM J. Imaging Sci. 2009) is the image turned in-plane by
``phi`` degrees (counter-clockwise on screen, :func:`keynet.base.geometry.rotation_homography`,
onto a canvas that holds the whole turned image), then tilted by ``t``: blurred along x with
a Gaussian of ``sigma = 0.8 * sqrt(t^2 - 1)`` px (ASIFT's anti-aliasing) and compressed by
``1 / t`` along x. Its 2x3 affine ``A_view`` maps pixel centres of the image to pixel
centres of the view: ``A_view = diag(1/t, 1) @ R_canvas(phi)``. Outside the image the view
repeats the image's border (as the descriptor patches do), so the image's edge makes no
keypoints of its own.

View sets, iterative as in MODS (Mishkin, Matas & Perdoch, CVIU 2015): level 0 is the plain
image, each further level adds the views of its tilts, with in-plane rotations every
``72 / t`` degrees over [0, 180) (ASIFT's sampling; the rotations by 180 + phi are the same
tilt):

===== ====== =========================================== ======= =====================
level tilts  rotations (degrees)                         views   keypoints per view
===== ====== =========================================== ======= =====================
0     1      0                                           1       ``num_points``
1     2      0, 36, 72, 108, 144                         5       ``num_points / 5``
2     4      0, 18, 36, ..., 162                         10      ``num_points / 10``
===== ====== =========================================== ======= =====================

Each level gets the keypoint budget of the plain image, shared by its views, so the union of
levels 0..L holds at most ``(L + 1) * num_points`` keypoints (the descriptor distances of
two unions are ``(L + 1)^2`` times the plain ones; after a pair's first union matching,
each level computes only those of the features it added,
:class:`~keynet.pipeline.nearest.GrowingNeighbours`). Tilts 2 and 4 with both images viewed
cover relative tilts up to 16 (a tilt t0 view of one image against a tilt t1 view of the
other), with ASIFT's factor-2 steps between the simulated tilts. The measured cost of each
level is in docs/matching.md.

Back-mapping
------------
The features of a view are computed by the same :class:`~keynet.pipeline.extraction.Extractor`
on the view; a view keypoint ``(x, y, s)`` with the frame ``S_v R(theta_v)`` (its affine
shape, identity without one, and orientation, 0 for upright features; the frame convention of
:mod:`hardnet.affnet`) maps back through ``B = A_view^-1`` (linear part ``L``):

* position ``B [x, y, 1]``; scale ``sqrt(det L) * s``;
* frame ``M = L / sqrt(det L) @ S_v @ R(theta_v)``, which is split back
  (:func:`decompose_frames`) into the convention's shape (lower triangular, determinant 1)
  and the orientation inside it: ``M = upright(M) @ R(theta)``;
* the descriptor is the view's, unchanged: it describes the region of the image under the
  whole frame ``M``. Keypoints mapped outside the image are dropped.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from hardnet.affnet import upright_shape
from keynet.base import twoview
from keynet.base.geometry import rotation_homography
from keynet.detection import ImageTooSmallError, SkippedLevelsWarning

from .config import VIEW_SYNTHESIS_MODES, MatcherConfig
from .extraction import Extractor, Features, full_resolution, read_for_extraction
from .matchers import match_union
from .nearest import GrowingNeighbours

PathLike = Union[str, os.PathLike]
#: The tilts of levels 1, 2, ... (level 0: the plain image).
LEVEL_TILTS: Tuple[Tuple[float, ...], ...] = ((2.0,), (4.0,))
#: ASIFT's rotation sampling: every ``ROTATION_STEP / t`` degrees over [0, 180).
ROTATION_STEP = 72.0
#: ASIFT's anti-aliasing before the compression: ``sigma = BLUR * sqrt(t^2 - 1)``.
BLUR = 0.8
#: Matches whose both endpoints are within this distance (px) of a better-scored one are
#: the same correspondence found in several views (:func:`dedup_matches`).
DEDUP_RADIUS = 2.0
#: The name of this view set in the features fingerprint (change it with the set).
VIEW_SET_ID = "tilts 2,4; rotations 72/t deg; points per level"


@dataclass(frozen=True)
class View:
    """One synthesised view: ``index`` (0 = the plain image), ``level``, ``tilt``, in-plane
    rotation ``phi`` (degrees) and ``share`` of the detector's keypoint budget."""

    index: int
    level: int
    tilt: float
    phi: float
    share: float

    @property
    def plain(self) -> bool:
        return self.tilt == 1.0 and self.phi == 0.0


def view_set(level_tilts: Sequence[Sequence[float]] = LEVEL_TILTS) -> List[View]:
    """All views, level by level: the plain image, then for each level its tilts with
    rotations every ``72 / t`` degrees over [0, 180)."""
    views = [View(0, 0, 1.0, 0.0, 1.0)]
    for level, tilts in enumerate(level_tilts, start=1):
        specs = []
        for t in tilts:
            step = ROTATION_STEP / float(t)
            specs += [(float(t), k * step) for k in range(int(math.ceil(180.0 / step - 1e-9)))]
        views += [View(len(views) + i, level, t, phi, 1.0 / len(specs)) for i, (t, phi) in enumerate(specs)]
    return views


VIEWS: List[View] = view_set()
NUM_LEVELS = 1 + len(LEVEL_TILTS)
#: The last view level: the union of levels ``0..LAST_LEVEL`` is all the views.
LAST_LEVEL = NUM_LEVELS - 1
#: Geometric verification of view-synthesis matches: the largest epipolar distance (px, full
#: resolution) of an inlier of the fundamental matrix. 2 px, not the 1 px of ``keynet demo``:
#: the back-mapped position of a tilt-t view is t times less precise across the tilt.
VERIFY_THRESHOLD = 2.0


@dataclass(frozen=True)
class ViewBudget:
    """How the synthesised views of each level are detected: together ``share`` of the plain
    image's keypoint budget (each view its own part of it, :attr:`View.share`), with
    ``upsampled_levels`` up-sampled pyramid levels (``None``: the detector's own), synthesised
    from the image resized by ``scale`` (1: the image itself; :func:`view_features`)."""

    share: float = 1.0
    upsampled_levels: Optional[int] = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0 or not 0.0 < self.scale <= 1.0:
            raise ValueError(f"a view budget's share and scale are in (0, 1], not {self.share}, {self.scale}")

    @property
    def id(self) -> str:
        """The name of the view set in the features fingerprint (:data:`VIEW_SET_ID` for the
        whole budget at the detector's pyramid)."""
        if self == ViewBudget():
            return VIEW_SET_ID
        up = "" if self.upsampled_levels is None else f", {self.upsampled_levels} up-sampled levels"
        sc = "" if self.scale == 1.0 else f", image x{self.scale:g}"
        return f"{VIEW_SET_ID} x{self.share:g}{up}{sc}"


#: Every view level with the plain image's whole budget at the detector's pyramid (``auto``, ``full``).
WHOLE_BUDGET = ViewBudget()


def view_points(num_points: int, view: View, budget: ViewBudget = WHOLE_BUDGET) -> int:
    """The keypoints a synthesised ``view`` is detected with: its ``share`` of the level's
    ``budget.share`` of the plain image's ``num_points`` (at least 1)."""
    return max(1, int(round(num_points * budget.share * view.share)))


def views_of_level(level: int, views: Sequence[View] = VIEWS) -> List[View]:
    return [v for v in views if v.level == level]


def view_levels(view_index: np.ndarray, views: Sequence[View] = VIEWS) -> np.ndarray:
    """The level of each per-keypoint view index."""
    lut = np.array([v.level for v in views], dtype=np.int64)
    return lut[np.asarray(view_index, dtype=np.int64)]


def levels_to_match(view_synthesis: str) -> Sequence[int]:
    """The last levels matched in turn: ``auto`` 0, 1, ..., :data:`LAST_LEVEL` (MODS's
    iteration); ``full`` the last level at once."""
    return range(NUM_LEVELS) if view_synthesis == "auto" else [LAST_LEVEL]


def level_prefix(levels: np.ndarray, level: int) -> int:
    """How many keypoints belong to the levels ``0..level``, given the level of each keypoint
    (:func:`view_levels`): the levels are stored in order, so they are a prefix."""
    return int(np.sum(levels <= level))


def view_affine(shape: Tuple[int, int], tilt: float, phi: float
                ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], Tuple[int, int]]:
    """The geometry of the view of an image of ``shape`` (rows, cols): ``(A_view (2, 3),
    R (3, 3), turned canvas (rows, cols), view (rows, cols))``: ``R`` turns the image by ``phi``
    onto a canvas that holds it, ``A_view = diag(1/t, 1) @ R`` maps image pixels to view pixels."""
    rot, (h2, w2) = rotation_homography(shape, phi)
    w3 = int(math.ceil((w2 - 1) / float(tilt) - 1e-9)) + 1
    a = np.diag([1.0 / float(tilt), 1.0, 1.0]) @ rot
    return a[:2].copy(), rot, (h2, w2), (h2, w3)


def synthesize(image: np.ndarray, view: View) -> Tuple[np.ndarray, np.ndarray]:
    """``(view image float32, A_view (2, 3))`` of a grey image (see the module doc)."""
    img = np.asarray(image, dtype=np.float32)
    a, rot, (h2, w2), (h3, w3) = view_affine(img.shape[:2], view.tilt, view.phi)
    turned = img if view.phi == 0.0 else cv2.warpAffine(img, rot[:2], (w2, h2), flags=cv2.INTER_LINEAR,
                                                        borderMode=cv2.BORDER_REPLICATE)
    if view.tilt == 1.0:
        return np.ascontiguousarray(turned), a
    sigma = BLUR * math.sqrt(view.tilt ** 2 - 1.0)
    k = 2 * int(math.ceil(4.0 * sigma)) + 1
    blurred = cv2.GaussianBlur(turned, (k, 1), sigmaX=sigma, sigmaY=0.0, borderType=cv2.BORDER_REPLICATE)
    out = cv2.warpAffine(blurred, np.array([[1.0 / view.tilt, 0, 0], [0, 1, 0]]), (w3, h3),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, a


# ----------------------------------------------------------------------------- frames
def compose_frames(shapes: Optional[np.ndarray], orientations: Optional[np.ndarray], n: int) -> np.ndarray:
    """``(N, 2, 2)`` frames ``S @ R(theta)`` (:mod:`hardnet.affnet`): ``shapes`` (N, 2, 2) or
    ``None`` (identity), ``orientations`` (N,) degrees or ``None`` (0)."""
    m = np.tile(np.eye(2), (n, 1, 1)) if shapes is None else np.asarray(shapes, np.float64).reshape(n, 2, 2)
    if orientations is None:
        return m.copy()
    a = np.deg2rad(np.asarray(orientations, np.float64).reshape(n))
    c, s = np.cos(a), np.sin(a)
    r = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return m @ r


def decompose_frames(frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split ``(N, 2, 2)`` frames of positive determinant into the convention's affine shape
    and the orientation inside it: ``M / sqrt(det M) = U @ R(theta)``, ``U`` lower triangular
    with a positive diagonal and determinant 1 (:func:`hardnet.affnet.upright_shape`, the LQ
    factor). Returns ``(U (N, 2, 2) float32, theta (N,) float32 degrees in [0, 360))``; the
    inverse of :func:`compose_frames` on such frames."""
    m = np.asarray(frames, np.float64).reshape(-1, 2, 2)
    u = upright_shape(torch.from_numpy(m)).numpy()
    # first row of M = u11 * (cos, -sin): the rotation's angle
    theta = np.mod(np.rad2deg(np.arctan2(-m[:, 0, 1], m[:, 0, 0])), 360.0)
    return u.astype(np.float32), theta.astype(np.float32)


def map_back(keypoints: np.ndarray, a_view: np.ndarray, shapes: Optional[np.ndarray] = None,
             orientations: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """View keypoints ``(N, >=3)`` x, y, scale, ... -> the image's: ``(keypoints (N, C), shapes
    (N, 2, 2), orientations (N,) degrees)`` through ``A_view^-1`` (the module doc); the
    columns after the scale (score) are carried."""
    a3 = np.vstack([np.asarray(a_view, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    b = np.linalg.inv(a3)
    lin = b[:2, :2]
    det = float(np.linalg.det(lin))
    if det <= 0:
        raise ValueError("a view's affine must keep the orientation (positive determinant)")
    k = np.array(keypoints, dtype=np.float64, copy=True).reshape(len(keypoints), -1)
    n = len(k)
    k[:, :2] = k[:, :2] @ lin.T + b[:2, 2]
    k[:, 2] *= math.sqrt(det)
    frames = (lin / math.sqrt(det))[None] @ compose_frames(shapes, orientations, n)
    u, theta = decompose_frames(frames)
    return k, u, theta


def view_features(extractor: Extractor, image: np.ndarray, views: Sequence[View] = VIEWS,
                  name: Optional[str] = None, budget: ViewBudget = WHOLE_BUDGET) -> Tuple[Features, np.ndarray]:
    """The features of ``views`` of a grey ``image`` in the image's pixels: ``(Features,
    view index (N,) int)``. The plain view (index 0) is exactly ``extractor.features(image)``;
    the others are detected with :func:`view_points` of the detector's budget (and the
    ``budget``'s up-sampled levels), mapped back
    (:func:`map_back`) and the keypoints outside the image dropped. The union always has
    ``shapes`` and ``orientations`` (a view's region is an ellipse of the image), concatenated
    view by view in the order of ``views``. A view too small for Key.Net gives no features
    (the plain view too small is an error calling the image ``name``)."""
    h, w = np.asarray(image).shape[:2]
    plain_points = extractor.detector.settings.num_points
    up = {} if budget.upsampled_levels is None else {"upsampled_levels": budget.upsampled_levels}
    source, to_source = resized_for_views(image, budget.scale)
    parts = []
    for v in views:
        if v.plain:
            f = as_view_union(extractor.features(image, name=name) if isinstance(extractor, Extractor)
                              else extractor.features(image))
            kp, shp, ori = np.asarray(f.keypoints, np.float64), f.shapes, f.orientations
        else:
            img, a = synthesize(source, v)
            a = a @ to_source
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SkippedLevelsWarning)
                    f = extractor.features(img, num_points=view_points(plain_points, v, budget), **up)
            except ImageTooSmallError:
                continue
            kp, shp, ori = map_back(f.keypoints, a, f.shapes, f.orientations)
            inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
            kp, shp, ori = kp[inside], shp[inside], ori[inside]
            f = replace(f, descriptors=None if f.descriptors is None else f.descriptors[inside])
        parts.append((kp, f.descriptors, shp, ori, np.full(len(kp), v.index, np.int64)))
    kp = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 4))
    desc = None if not parts or parts[0][1] is None else np.concatenate([p[1] for p in parts]).astype(np.float32)
    shp = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 2, 2), np.float32)
    ori = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.float32)
    idx = np.concatenate([p[4] for p in parts]) if parts else np.zeros(0, np.int64)
    return Features(kp, desc, ori, (int(w), int(h)), shp), idx


def resized_for_views(image: np.ndarray, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(the grey image resized by scale (OpenCV's area interpolation), S (3, 3))``, ``S``
    mapping pixel centres of the image to those of the resized one: ``x' = (x + 0.5) w' / w -
    0.5`` (the resized size rounded, so each axis has its own exact factor). ``scale`` 1 is the
    image itself and the identity."""
    img = np.asarray(image, dtype=np.float32)
    if scale == 1.0:
        return img, np.eye(3)
    h, w = img.shape[:2]
    w2, h2 = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    sx, sy = w2 / float(w), h2 / float(h)
    small = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_AREA)
    return small, np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def as_view_union(f: Features) -> Features:
    """The plain image's features as a member of a view union: identity shapes and zero
    orientations where it has none (the positions and descriptors unchanged)."""
    n = len(f.keypoints)
    shp = np.tile(np.eye(2, dtype=np.float32), (n, 1, 1)) if f.shapes is None else np.asarray(f.shapes, np.float32)
    ori = np.zeros(n, np.float32) if f.orientations is None else np.asarray(f.orientations, np.float32)
    return replace(f, keypoints=np.asarray(f.keypoints, np.float64), shapes=shp, orientations=ori)


# ----------------------------------------------------------------------------- duplicates
def _points(xy0: np.ndarray, xy1: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return np.asarray(xy0, np.float64).reshape(-1, 2), np.asarray(xy1, np.float64).reshape(-1, 2)


def _keep_best_first(scores: np.ndarray, conflicts: Callable[[int], Sequence[int]]) -> np.ndarray:
    """Greedy selection, best score first: a match is kept unless a kept one conflicts with it
    (``conflicts(i)``: the matches match ``i`` rules out; symmetric)."""
    n = len(scores)
    keep = np.zeros(n, dtype=bool)
    dropped = np.zeros(n, dtype=bool)
    for i in np.argsort(-np.asarray(scores, np.float64).reshape(n), kind="stable"):
        if not dropped[i]:
            keep[i] = True
            dropped[list(conflicts(i))] = True
    return keep


def dedup_matches(xy0: np.ndarray, xy1: np.ndarray, scores: np.ndarray, radius: float = DEDUP_RADIUS
                  ) -> np.ndarray:
    """Boolean mask of the matches to keep: best score first, a match whose endpoints are
    both within ``radius`` px of those of a kept match (the same correspondence found in
    several views, or one point detected at several pyramid levels) is dropped."""
    p0, p1 = _points(xy0, xy1)
    if len(p0) == 0:
        return np.zeros(0, dtype=bool)
    # both endpoints within r -> the 4-D distance is within r * sqrt(2): candidates, then checked
    neigh = cKDTree(np.hstack([p0, p1])).query_ball_point(np.hstack([p0, p1]), r=radius * math.sqrt(2.0) + 1e-9)
    return _keep_best_first(scores, lambda i: [j for j in neigh[i] if np.linalg.norm(p0[j] - p0[i]) <= radius
                                               and np.linalg.norm(p1[j] - p1[i]) <= radius])


def one_to_one(xy0: np.ndarray, xy1: np.ndarray, scores: np.ndarray, radius: float = DEDUP_RADIUS) -> np.ndarray:
    """Boolean mask of the matches to keep so that each place of either image has one match:
    best score first, a match is dropped when its point in image 0 or its point in image 1 is
    within ``radius`` px of the same image's point of a kept match (a point of one image has
    one position in the other: the others are one-to-many matches, which merged view matches
    produce, MODS's filter). Drops every duplicate :func:`dedup_matches` drops, and more."""
    p0, p1 = _points(xy0, xy1)
    if len(p0) == 0:
        return np.zeros(0, dtype=bool)
    near0 = cKDTree(p0).query_ball_point(p0, r=radius + 1e-9)
    near1 = cKDTree(p1).query_ball_point(p1, r=radius + 1e-9)
    return _keep_best_first(scores, lambda i: near0[i] + near1[i])


# ----------------------------------------------------------------------------- images viewed
class ViewedImage:
    """An image file read once for view synthesis, its features computed level by level
    and kept: :meth:`features` gives the union of the levels ``0..level`` in full-resolution
    pixels with the per-keypoint view index; :attr:`plain` the level-0 features exactly as
    the pipeline without views computes them (:func:`~keynet.pipeline.extraction.image_features`),
    :attr:`level_seconds` the seconds each level's features took. ``budget``: how the views
    are detected (:class:`ViewBudget`)."""

    def __init__(self, extractor: Extractor, path: PathLike, max_image_size: int,
                 budget: ViewBudget = WHOLE_BUDGET) -> None:
        self.extractor = extractor
        self.name = str(path)
        self.budget = budget
        t0 = time.perf_counter()
        self.image, self.s, self.size = read_for_extraction(path, max_image_size)
        self._read_seconds = time.perf_counter() - t0
        self._levels: List[Tuple[Features, np.ndarray]] = []
        self.level_seconds: List[float] = []
        self.plain: Optional[Features] = None

    def features(self, level: int = LAST_LEVEL) -> Tuple[Features, np.ndarray]:
        """The union of the features of the views of levels ``0..level`` and the view index."""
        while len(self._levels) <= level:
            t0 = time.perf_counter()
            lv = len(self._levels)
            if lv == 0:
                ex = self.extractor
                f = ex.features(self.image, name=self.name) if isinstance(ex, Extractor) else ex.features(self.image)
                self.plain = Features(full_resolution(f.keypoints, self.s), f.descriptors, f.orientations, self.size,
                                      f.shapes)
                f, v = as_view_union(f), np.zeros(len(f.keypoints), np.int64)
            else:
                f, v = view_features(self.extractor, self.image, views_of_level(lv), name=self.name,
                                     budget=self.budget)
            self._levels.append((Features(full_resolution(f.keypoints, self.s), f.descriptors, f.orientations,
                                          self.size, f.shapes), v))
            self.level_seconds.append(time.perf_counter() - t0 + (self._read_seconds if lv == 0 else 0.0))
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
                        level: int = LAST_LEVEL, budget: ViewBudget = WHOLE_BUDGET) -> Tuple[Features, np.ndarray]:
    """The union of the features of the views of levels ``0..level`` of an image file
    (:func:`view_features`, the views detected per ``budget``) in
    full-resolution pixels, and the per-keypoint view index; level 0 alone is
    :func:`keynet.pipeline.extraction.image_features` plus identity shapes and zero orientations."""
    return ViewedImage(extractor, path, max_image_size, budget).features(level)


# ----------------------------------------------------------------------------- view matching
#: ``get(level)`` of :func:`match_view_levels`: the union of the views of levels ``0..level``.
LevelSource = Callable[[int], Dict[str, np.ndarray]]


def verify_matches(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, scores: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the duplicates among the matches of two view unions (:func:`dedup_matches`) and
    verify the rest with a fundamental matrix (MAGSAC++ where OpenCV has it,
    :data:`VERIFY_THRESHOLD` px): ``(matches, scores, inliers (K,) bool)``, the order kept."""
    m = np.asarray(matches, np.int64).reshape(-1, 2)
    xy0, xy1 = kpts0[m[:, 0], :2], kpts1[m[:, 1], :2]
    keep = dedup_matches(xy0, xy1, scores)
    m, sc = m[keep], np.asarray(scores, np.float32)[keep]
    fit = twoview.estimate_fundamental(xy0[keep], xy1[keep], threshold=VERIFY_THRESHOLD)
    return m, sc, fit.inliers


def match_view_levels(get0: LevelSource, get1: LevelSource,
                      config: MatcherConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """MODS's iteration over the view levels of two images. ``get0(level)`` / ``get1(level)``:
    the union of the views of levels ``0..level`` of an image as ``{'kpts' (N, >=3), 'desc',
    'lafs' (N, 2, 3), 'ori' ((N,) or None: not checked), 'hw' (rows, cols)}``, each level's
    keypoints after those of the levels below (so indices stay valid as levels are added).
    ``auto``: levels 0, 1, ... until the verified matches reach ``min_inliers`` (or the last
    level); ``full``: the last level at once (:func:`levels_to_match`). Returns
    ``(matches, scores, inliers, level)``: the merged tentative matches (indices into the
    union of levels ``0..level``), the mask of the verified ones, and the last level matched."""
    neighbours = GrowingNeighbours()  # each level computes the distances of its new views only
    for level in levels_to_match(config.view_synthesis):
        a, b = get0(level), get1(level)
        m, sc = match_union(a["kpts"], a["desc"], a["lafs"], b["kpts"], b["desc"], b["lafs"], a["hw"], b["hw"],
                            config, a["ori"], b["ori"], neighbours=neighbours)
        m, sc, inl = verify_matches(a["kpts"], b["kpts"], m, sc)
        if inl.sum() >= config.min_inliers:
            break
    return m, sc, inl, level


__all__ = [
    "BLUR", "DEDUP_RADIUS", "LAST_LEVEL", "LEVEL_TILTS", "NUM_LEVELS", "ROTATION_STEP", "VERIFY_THRESHOLD", "VIEWS",
    "VIEW_SET_ID", "VIEW_SYNTHESIS_MODES", "View", "ViewBudget", "ViewedImage", "WHOLE_BUDGET", "compose_frames", "concat_features",
    "decompose_frames", "dedup_matches", "image_view_features", "level_prefix", "levels_to_match", "map_back", "one_to_one",
    "match_view_levels", "synthesize", "verify_matches", "view_affine", "view_features", "view_levels", "view_points", "view_set",
    "views_of_level",
]
