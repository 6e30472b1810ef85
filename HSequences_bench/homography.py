"""Homography estimation accuracy (SuperPoint protocol) and corner-error AUC.

From the mutual matches, H is estimated with OpenCV RANSAC (``keynet.base.twoview``); the four corners of the
source image are warped with the estimate and with the ground truth, and the mean
distance between the two is the pair's corner error (inf when estimation fails).
A pair is correct at ``e`` px when its error is ``<= e``. The AUC of the cumulative
error curve up to ``t`` px is normalised to [0, 1].
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from keynet.base import twoview

ACCURACY_THRESHOLDS = (1, 3, 5)
AUC_THRESHOLDS = (1, 3, 5, 10)


def image_corners(shape: Tuple[int, int]) -> np.ndarray:
    """``(4, 2)`` corners (x, y) of an image of ``shape`` (rows, cols), as SuperPoint."""
    rows, cols = shape[0], shape[1]
    return np.array([[0, 0], [0, rows - 1], [cols - 1, 0], [cols - 1, rows - 1]], dtype=np.float64)


def estimate_homography(xy_src: np.ndarray, xy_dst: np.ndarray, ransac_threshold: float = 3.0,
                        method: str = "ransac") -> np.ndarray:
    """Robust homography (src -> dst) from matched points, or ``None`` (fewer than 4
    matches or OpenCV failure), by :func:`keynet.base.twoview.estimate_homography`.

    The default, ``method='ransac'`` with OpenCV's own confidence (0.995) and iteration cap
    (2000), is the benchmark's historical estimator (``cv2.findHomography(.., cv2.RANSAC,
    ransac_threshold)``, deterministic for given input); ``method='magsac'`` etc. select the
    other :data:`keynet.base.twoview.METHODS`."""
    res = twoview.estimate_homography(xy_src, xy_dst, method=method, threshold=ransac_threshold,
                                      confidence=0.995, max_iters=2000)
    return res.matrix


def corner_error(h_est: np.ndarray, h_gt: np.ndarray, shape_src: Tuple[int, int]) -> float:
    """Mean distance (px) between the source corners warped by ``h_est`` and by ``h_gt``
    (inf if ``h_est`` is None or degenerate)."""
    if h_est is None:
        return float("inf")
    c = np.column_stack([image_corners(shape_src), np.ones(4)])
    a, b = c @ np.asarray(h_est, np.float64).T, c @ np.asarray(h_gt, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:], axis=1).mean()
    return float(err) if np.isfinite(err) else float("inf")


def homography_accuracy(errors: Sequence[float], thresholds: Sequence[float] = ACCURACY_THRESHOLDS) -> Dict[str, float]:
    """Share of pairs with corner error ``<= e`` for each ``e``: ``{'1': .., '3': .., '5': ..}``."""
    e = np.asarray(errors, dtype=np.float64)
    return {str(t): float(np.mean(e <= t)) if e.size else float("nan") for t in thresholds}


def error_auc(errors: Sequence[float], thresholds: Sequence[float] = AUC_THRESHOLDS) -> Dict[str, float]:
    """Area under the cumulative error curve up to each threshold, divided by it."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    out = {}
    if e.size == 0:
        return {str(t): float("nan") for t in thresholds}
    recall = np.arange(1, e.size + 1) / e.size
    e = np.r_[0.0, e]
    recall = np.r_[0.0, recall]
    for t in thresholds:
        last = int(np.searchsorted(e, t))
        x = np.r_[e[:last], t]
        y = np.r_[recall[:last], recall[last - 1]]
        out[str(t)] = float(np.trapezoid(y, x) / t)
    return out
