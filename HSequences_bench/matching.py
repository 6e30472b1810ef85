"""Descriptor matching metrics.

* :func:`mutual_nearest_neighbours`: brute-force nearest neighbours both ways with
  OpenCV's ``BFMatcher`` (as the official code) and the mutual check.
* :func:`matching_scores`: the official Key.Net matching metrics: a mutual match is
  correct when its reprojection distance is ``< t`` px; matching score = correct /
  min(N_src, N_dst) (what the official code prints as "Matching Score", and whose mean
  over t = 1..10 it calls "MMA"), and correct / possible matches.
* :func:`mma_precision`: the D2-Net convention, correct / all mutual matches with
  ``distance <= t``.
"""
from __future__ import annotations

from typing import Dict, Sequence

import cv2
import numpy as np

#: Thresholds (px) of the per-threshold curves (official: 1..10).
THRESHOLDS = tuple(range(1, 11))
_NORMS = {"l2": cv2.NORM_L2, "hamming": cv2.NORM_HAMMING}


def _for_opencv(d: np.ndarray, distance: str) -> np.ndarray:
    d = np.asarray(d)
    if distance == "hamming":
        if d.dtype != np.uint8:
            raise ValueError(f"hamming distance needs packed uint8 descriptors, got {d.dtype}")
        return np.ascontiguousarray(d)
    if d.dtype == np.uint8 and d.ndim == 2 and d.shape[1] * 255 ** 2 >= 2 ** 24:
        return np.ascontiguousarray(d)  # float32 could not hold the sums exactly
    # uint8 with small D: float32 gives the same (exact integer) distances, 7x faster
    return np.ascontiguousarray(d, dtype=np.float32)


def mutual_nearest_neighbours(dsc_src: np.ndarray, dsc_dst: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Mutual nearest neighbours between two descriptor sets: ``(K, 2)`` int64
    ``[src_index, dst_index]`` in increasing ``src_index`` order.

    ``distance``: 'l2' (official; descriptors are matched as float32, which is exact
    for uint8 ones) or 'hamming' (packed uint8 binary descriptors).
    """
    if distance not in _NORMS:
        raise ValueError(f"distance must be one of {sorted(_NORMS)}, got {distance!r}")
    a, b = _for_opencv(dsc_src, distance), _for_opencv(dsc_dst, distance)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor sets must be (N, D) with equal D, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        a, b = a.astype(np.float32), b.astype(np.float32)
    matcher = cv2.BFMatcher(_NORMS[distance])
    fwd = np.full(a.shape[0], -1, dtype=np.int64)
    for m in matcher.match(a, b):
        fwd[m.queryIdx] = m.trainIdx
    bwd = np.full(b.shape[0], -1, dtype=np.int64)
    for m in matcher.match(b, a):
        bwd[m.queryIdx] = m.trainIdx
    src = np.nonzero(fwd >= 0)[0]
    src = src[bwd[fwd[src]] == src]
    return np.stack([src, fwd[src]], axis=1).astype(np.int64)


def match_distances(points_src: np.ndarray, points_dst: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """Distance between matched points (both sets in the same frame): ``(K,)``."""
    m = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    ps = np.asarray(points_src, dtype=np.float64)
    pd = np.asarray(points_dst, dtype=np.float64)
    if m.shape[0] == 0:
        return np.zeros(0)
    return np.sqrt((ps[m[:, 0], 0] - pd[m[:, 1], 0]) ** 2 + (ps[m[:, 0], 1] - pd[m[:, 1], 1]) ** 2)


def matching_scores(dist: np.ndarray, num_points: int, possible_matches: int, threshold: float) -> Dict[str, float]:
    """Official matching metrics at one pixel threshold from mutual-match distances.

    Returns ``match_score`` (correct / num_points; 0 when num_points is 0),
    ``match_score_corr`` (correct / (possible_matches + 1e-6)) and ``num_matches``
    (correct, i.e. ``dist < threshold``).
    """
    correct = float(np.count_nonzero(np.asarray(dist) < threshold))
    return {"match_score": correct / num_points if num_points else 0.0,
            "match_score_corr": correct / (possible_matches + 1e-6),
            "num_matches": correct}


def mma_precision(dist: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """D2-Net mean matching accuracy of one pair: share of mutual matches with distance
    ``<= t`` for each threshold (0 when there is no match)."""
    dist = np.asarray(dist, dtype=np.float64)
    if dist.size == 0:
        return np.zeros(len(thresholds))
    return np.array([np.mean(dist <= t) for t in thresholds])
