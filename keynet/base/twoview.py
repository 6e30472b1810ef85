"""Two-view geometry from point correspondences: robust homography, fundamental and
essential matrices with OpenCV's estimators, inlier masks returned.

Points are ``(K, 2)`` pixel coordinates ``x, y`` of the same K correspondences in both
images (row k of ``xy0`` matches row k of ``xy1``); any pixel convention works as long as
both images and the intrinsics use the same one.

``method`` names an OpenCV robust estimator:

========== ============================================================ ==============
name       OpenCV flag                                                  note
========== ============================================================ ==============
magsac     ``cv2.USAC_MAGSAC`` (MAGSAC++, USAC framework)               default when available
accurate   ``cv2.USAC_ACCURATE`` (GC-RANSAC + local optimisation)
usac       ``cv2.USAC_DEFAULT`` (LO-RANSAC)
prosac     ``cv2.USAC_PROSAC`` (needs points sorted best first)
ransac     ``cv2.RANSAC`` (classic RANSAC; OpenCV's default, deterministic)
lmeds      ``cv2.LMEDS``
========== ============================================================ ==============

OpenCV builds without USAC fall back to ``ransac`` for the ``DEFAULT_METHOD``.
Every estimator returns a :class:`TwoViewResult`: the 3x3 matrix (``None`` when too few
points or the estimation failed) and a boolean inlier mask over the K correspondences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import cv2
import numpy as np

HAS_USAC = hasattr(cv2, "USAC_MAGSAC")

METHODS: Dict[str, int] = {"ransac": cv2.RANSAC, "lmeds": cv2.LMEDS}
if HAS_USAC:
    METHODS.update({"magsac": cv2.USAC_MAGSAC, "accurate": cv2.USAC_ACCURATE,
                    "usac": cv2.USAC_DEFAULT, "prosac": cv2.USAC_PROSAC})

#: MAGSAC++ where this OpenCV has USAC (more accurate than RANSAC and far less sensitive
#: to the threshold), else classic RANSAC.
DEFAULT_METHOD = "magsac" if HAS_USAC else "ransac"
#: Minimal sample sizes (below them no estimate is attempted).
MIN_POINTS = {"homography": 4, "fundamental": 8, "essential": 5}


@dataclass
class TwoViewResult:
    """A robust two-view estimate.

    ``matrix``: 3x3 (``None`` when the estimation failed); ``inliers``: (K,) bool mask;
    for the essential matrix, ``R``, ``t`` (camera 1 from camera 0: x1 = R x0 + t, unit
    ``t``) when the pose was recovered, and ``pose_inliers`` (inliers in front of both
    cameras).
    """

    matrix: Optional[np.ndarray]
    inliers: np.ndarray
    R: Optional[np.ndarray] = None
    t: Optional[np.ndarray] = None
    pose_inliers: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def ok(self) -> bool:
        return self.matrix is not None


def method_flag(method: str) -> int:
    """OpenCV flag of an estimator name (``ValueError`` listing the names otherwise)."""
    if method not in METHODS:
        raise ValueError(f"unknown robust estimator {method!r}; choose one of {sorted(METHODS)}"
                         + ("" if HAS_USAC else " (this OpenCV has no USAC estimators)"))
    return METHODS[method]


def _points(xy0: np.ndarray, xy1: np.ndarray):
    a = np.asarray(xy0, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(xy1, dtype=np.float64).reshape(-1, 2)
    if len(a) != len(b):
        raise ValueError(f"the two point sets must have the same length, got {len(a)} and {len(b)}")
    return a, b


def _failed(n: int) -> TwoViewResult:
    return TwoViewResult(None, np.zeros(n, dtype=bool))


def _valid(m: Optional[np.ndarray]) -> bool:
    return m is not None and m.shape == (3, 3) and bool(np.isfinite(m).all())


def _mask(mask: Optional[np.ndarray], n: int) -> np.ndarray:
    if mask is None:
        return np.zeros(n, dtype=bool)
    return np.asarray(mask).reshape(-1)[:n].astype(bool)


def estimate_homography(xy0: np.ndarray, xy1: np.ndarray, method: str = DEFAULT_METHOD,
                        threshold: float = 3.0, confidence: float = 0.999,
                        max_iters: int = 10000) -> TwoViewResult:
    """Robust homography ``H`` with ``x1 ~ H x0`` (``cv2.findHomography``).

    ``threshold``: maximum reprojection error of an inlier in image 1 (px).
    ``method='ransac', confidence=0.995, max_iters=2000`` is exactly OpenCV's default call
    ``cv2.findHomography(xy0, xy1, cv2.RANSAC, threshold)`` (what the HSequences benchmark
    uses, deterministic).
    """
    a, b = _points(xy0, xy1)
    flag = method_flag(method)
    if len(a) < MIN_POINTS["homography"]:
        return _failed(len(a))
    h, mask = cv2.findHomography(a.reshape(-1, 1, 2), b.reshape(-1, 1, 2), flag, threshold,
                                 maxIters=int(max_iters), confidence=float(confidence))
    if not _valid(h):
        return _failed(len(a))
    return TwoViewResult(h, _mask(mask, len(a)))


def estimate_fundamental(xy0: np.ndarray, xy1: np.ndarray, method: str = DEFAULT_METHOD,
                         threshold: float = 1.0, confidence: float = 0.999,
                         max_iters: int = 10000) -> TwoViewResult:
    """Robust fundamental matrix ``F`` with ``x1^T F x0 = 0`` (``cv2.findFundamentalMat``).

    ``threshold``: maximum distance (px) of an inlier to its epipolar line.
    """
    a, b = _points(xy0, xy1)
    flag = method_flag(method)
    if flag == cv2.RANSAC:
        flag = cv2.FM_RANSAC
    elif flag == cv2.LMEDS:
        flag = cv2.FM_LMEDS
    if len(a) < MIN_POINTS["fundamental"]:
        return _failed(len(a))
    f, mask = cv2.findFundamentalMat(a, b, flag, threshold, confidence, int(max_iters))
    if f is None or f.shape != (3, 3) or not np.isfinite(f).all():  # 7-point may return 9x3
        return _failed(len(a))
    return TwoViewResult(f, _mask(mask, len(a)))


def _as_k(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must be a 3x3 matrix, got shape {k.shape}")
    return k


def estimate_essential(xy0: np.ndarray, xy1: np.ndarray, K0: np.ndarray, K1: Optional[np.ndarray] = None,
                       method: str = DEFAULT_METHOD, threshold: float = 1.0, confidence: float = 0.999,
                       max_iters: int = 10000, recover_pose: bool = True) -> TwoViewResult:
    """Robust essential matrix ``E`` with ``x1n^T E x0n = 0`` for calibrated points
    (``xn = K^-1 x``); ``K1`` defaults to ``K0`` (same camera).

    The points are normalised with their intrinsics (``cv2.undistortPoints``) and the
    five-point solver runs in normalised coordinates, so two different cameras are fine;
    ``threshold`` is in pixels (divided by the mean focal length internally). With
    ``recover_pose`` the relative pose (``cv2.recoverPose``: the one of the four
    decompositions that puts most inliers in front of both cameras) fills ``R``, ``t``.
    """
    a, b = _points(xy0, xy1)
    flag = method_flag(method)
    k0 = _as_k(K0)
    k1 = k0 if K1 is None else _as_k(K1)
    if len(a) < MIN_POINTS["essential"]:
        return _failed(len(a))
    na = cv2.undistortPoints(a.reshape(-1, 1, 2), k0, None).reshape(-1, 2)
    nb = cv2.undistortPoints(b.reshape(-1, 1, 2), k1, None).reshape(-1, 2)
    focal = (k0[0, 0] + k0[1, 1] + k1[0, 0] + k1[1, 1]) / 4.0
    e, mask = cv2.findEssentialMat(na, nb, np.eye(3), flag, confidence, threshold / focal,
                                   maxIters=int(max_iters))
    if e is not None and e.ndim == 2 and e.shape[0] > 3 and e.shape[1] == 3:
        e = e[:3]  # several five-point solutions come stacked (3k x 3): keep the best one
    if not _valid(e):
        return _failed(len(a))
    inl = _mask(mask, len(a))
    out = TwoViewResult(e, inl)
    if recover_pose and inl.sum() >= MIN_POINTS["essential"]:
        m = inl.astype(np.uint8).reshape(-1, 1)
        _, R, t, pmask = cv2.recoverPose(e, na, nb, np.eye(3), mask=m.copy())
        out.R, out.t = R, t.reshape(3)
        out.pose_inliers = _mask(pmask, len(a))
    return out


def homography_transfer_error(H: np.ndarray, xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """Per-correspondence distance (px) between ``H x0`` and ``x1``."""
    a, b = _points(xy0, xy1)
    p = np.column_stack([a, np.ones(len(a))]) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.linalg.norm(p[:, :2] / p[:, 2:] - b, axis=1)


def epipolar_distance(F: np.ndarray, xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """Symmetric epipolar distance (px): the larger of the distances of ``x1`` to the line
    ``F x0`` and of ``x0`` to the line ``F^T x1``."""
    a, b = _points(xy0, xy1)
    F = np.asarray(F, np.float64)
    pa = np.column_stack([a, np.ones(len(a))])
    pb = np.column_stack([b, np.ones(len(b))])
    l1 = pa @ F.T  # lines in image 1
    l0 = pb @ F  # lines in image 0
    num = np.abs(np.sum(pb * l1, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = num / np.hypot(l1[:, 0], l1[:, 1])
        d0 = num / np.hypot(l0[:, 0], l0[:, 1])
    return np.maximum(d0, d1)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix (the geodesic distance to the identity)."""
    c = (np.trace(np.asarray(R, np.float64)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# ----------------------------------------------------------------------------- fit quality
#: A fit is weak when (rules stated from counts and geometry, not tuned on data):
#: it keeps fewer inliers than COLMAP's geometric verification needs to accept a pair
#: (``TwoViewGeometryOptions.min_num_inliers``) ...
MIN_INLIERS = 15
#: ... its inliers span less than this share of either image (convex hull / image area: a fit
#: from one small patch says little about the rest, and a small patch is nearly planar) ...
MIN_COVERAGE = 0.10
#: ... or, for a fundamental matrix, a homography explains at least this share of its inliers
#: (a plane, or a camera that only rotated: the fundamental matrix is then not determined by
#: the points, Chum et al., CVPR 2005). The homography (RANSAC) is fitted to the inliers with
#: the fit's own threshold, as DEGENSAC does (:data:`HOMOGRAPHY_THRESHOLD_FACTOR`).
DEGENERATE_SHARE = 0.90
HOMOGRAPHY_THRESHOLD_FACTOR = 1.0
#: What to try on a weak fit (the wide-baseline options of ``demo``, ``match``, ``reconstruct``).
WIDE_BASELINE_HINT = "try the wide-baseline mode --wide-baseline"
PLANAR_HINT = "a plane or a pure rotation: fit --model homography"


@dataclass
class FitQuality:
    """How much a robust two-view fit can be trusted: ``num_inliers``, ``coverage`` (convex
    hull of the inliers / image area, in each image), ``homography_share`` (fundamental
    fits: the share of the inliers a homography explains; ``None`` otherwise) and
    ``problems`` (one phrase each; empty: not weak)."""

    num_inliers: int
    coverage: tuple
    homography_share: Optional[float]
    problems: list

    @property
    def weak(self) -> bool:
        return bool(self.problems)

    @property
    def degenerate(self) -> bool:
        return self.homography_share is not None and self.homography_share >= DEGENERATE_SHARE


def hull_coverage(xy: np.ndarray, size: tuple) -> float:
    """Area of the convex hull of the points ``xy`` (K, 2) over the area of a ``(width,
    height)`` image (0 for fewer than 3 points)."""
    xy = np.asarray(xy, np.float32).reshape(-1, 2)
    w, h = float(size[0]), float(size[1])
    if len(xy) < 3 or w <= 0 or h <= 0:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(xy))) / (w * h)


def fit_quality(xy0: np.ndarray, xy1: np.ndarray, fit: TwoViewResult, size0: tuple, size1: tuple,
                model: str = "fundamental", threshold: float = 1.0) -> FitQuality:
    """Judge ``fit`` (of ``model``, ``fundamental`` or ``homography``, at ``threshold`` px) to
    the correspondences ``xy0``/``xy1`` of images of ``size0``/``size1`` (width, height) by the
    rules above (:data:`MIN_INLIERS`, :data:`MIN_COVERAGE`, :data:`DEGENERATE_SHARE`)."""
    a, b = _points(xy0, xy1)
    inl = fit.inliers if fit.ok else np.zeros(len(a), bool)
    n = int(inl.sum())
    cov = (hull_coverage(a[inl], size0), hull_coverage(b[inl], size1))
    share = None
    if model == "fundamental" and n >= MIN_POINTS["homography"]:
        h = estimate_homography(a[inl], b[inl], "ransac", HOMOGRAPHY_THRESHOLD_FACTOR * threshold, 0.999, 2000)
        share = h.num_inliers / n if h.ok else 0.0
    problems = []
    if n < MIN_INLIERS:
        problems.append(f"only {n} inliers (fewer than {MIN_INLIERS})")
    if n >= 3 and min(cov) < MIN_COVERAGE:
        problems.append(f"inliers within {100 * min(cov):.0f}% of the image")
    if share is not None and n >= MIN_INLIERS and share >= DEGENERATE_SHARE:
        problems.append(f"a homography explains {100 * share:.0f}% of the inliers")
    return FitQuality(n, cov, share, problems)


def weak_fit_hint(q: FitQuality) -> str:
    """What to try on a weak fit: a homography for a degenerate fundamental fit, otherwise
    the wide-baseline options."""
    if q.degenerate and len(q.problems) == 1:
        return PLANAR_HINT
    return WIDE_BASELINE_HINT
