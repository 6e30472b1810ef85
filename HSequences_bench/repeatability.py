"""Repeatability of keypoints as in the official Key.Net HSequences benchmark.

Each keypoint is a circle (centre x, y; radius = its scale). Two keypoints in the same
frame correspond when the intersection-over-union of their circles is at least
``overlap``; correspondences are made one-to-one by a greedy assignment in order of
decreasing IoU. Two variants (official names):

* single scale ("location"): both radii set to ``radius`` (30 px);
* multi scale ("scale + location"): both radii multiplied by ``radius / max(r1, r2)``
  (the larger becomes 30 px); the centre distance is not rescaled.

Repeatability = accepted correspondences / min(N_src, N_dst), in percent (official).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy.spatial import cKDTree

#: Denominator guard of the official IoU, ``I / (U + eps)``.
IOU_EPS = 1e-6


def circle_intersection_area(r1: np.ndarray, r2: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Area of the intersection of circles of radii ``r1``, ``r2`` with centres ``d`` apart
    (element-wise, broadcasting). The terms are summed in the official order (``r1`` is
    the source radius) so that results agree to the last bits where possible."""
    big, small, d = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (r1, r2, d)))
    area = np.zeros(d.shape, dtype=np.float64)
    enclosed = d <= np.abs(big - small)
    area[enclosed] = np.pi * np.minimum(big, small)[enclosed] ** 2
    partial = ~enclosed & (d < big + small)
    if partial.any():
        R, r, c = big[partial], small[partial], d[partial]
        R2, r2, c2 = R ** 2, r ** 2, c ** 2
        alpha = np.arccos((c2 + r2 - R2) / (2 * c * r))
        beta = np.arccos((c2 + R2 - r2) / (2 * c * R))
        area[partial] = r2 * alpha + R2 * beta - 0.5 * (r2 * np.sin(2 * alpha) + R2 * np.sin(2 * beta))
    return area


def circle_iou(r1: np.ndarray, r2: np.ndarray, d: np.ndarray, eps: float = IOU_EPS) -> np.ndarray:
    """Intersection over union of two circles (official form ``I / (U + eps)``)."""
    r1 = np.asarray(r1, dtype=np.float64)
    r2 = np.asarray(r2, dtype=np.float64)
    inter = circle_intersection_area(r1, r2, d)
    union = np.pi * r1 ** 2 + np.pi * r2 ** 2 - inter
    return inter / (union + eps)


def greedy_assignment(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray,
                      threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one greedy assignment of candidate pairs by decreasing score.

    ``rows``, ``cols``, ``scores`` list candidate pairs (sparse matrix entries). Pairs
    are visited by decreasing score (ties: increasing ``rows * big + cols``, i.e. the
    row-major order of the dense matrix); a pair is accepted when its score is
    ``>= threshold`` and neither its row nor its column was taken before.
    Returns the accepted ``(rows, cols, scores)``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    keep = scores >= threshold
    rows, cols, scores = rows[keep], cols[keep], scores[keep]
    order = np.lexsort((cols, rows, -scores))
    taken_r: set = set()
    taken_c: set = set()
    acc = []
    for k in order.tolist():
        r, c = int(rows[k]), int(cols[k])
        if r in taken_r or c in taken_c:
            continue
        taken_r.add(r)
        taken_c.add(c)
        acc.append(k)
    acc_idx = np.asarray(acc, dtype=np.int64)
    return rows[acc_idx], cols[acc_idx], scores[acc_idx]


def _as_points(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 3), dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"{name} must be (N, >=3) [x, y, scale, ...], got shape {a.shape}")
    return a


def pairs_within(src_xy: np.ndarray, dst_xy: np.ndarray, max_distance: float
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (src, dst) index pairs whose centres are at most ``max_distance`` apart, with
    their distances ``sqrt(dx**2 + dy**2)``; sorted row-major. Uses a k-d tree."""
    src_xy = np.asarray(src_xy, dtype=np.float64)[:, :2]
    dst_xy = np.asarray(dst_xy, dtype=np.float64)[:, :2]
    if src_xy.shape[0] == 0 or dst_xy.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    tree_dst = cKDTree(dst_xy)
    neigh = cKDTree(src_xy).query_ball_tree(tree_dst, max_distance * (1 + 1e-9) + 1e-9)
    counts = np.fromiter((len(n) for n in neigh), dtype=np.int64, count=len(neigh))
    rows = np.repeat(np.arange(len(neigh), dtype=np.int64), counts)
    cols = np.fromiter((c for n in neigh for c in sorted(n)), dtype=np.int64, count=int(counts.sum()))
    d = np.sqrt((src_xy[rows, 0] - dst_xy[cols, 0]) ** 2 + (src_xy[rows, 1] - dst_xy[cols, 1]) ** 2)
    keep = d <= max_distance  # exact test on the recomputed distance
    return rows[keep], cols[keep], d[keep]


def compute_repeatability(src_pts: np.ndarray, dst_pts: np.ndarray, overlap: float = 0.6,
                          radius: float = 30.0, dist_match_thresh: float = 5.0,
                          max_distance: float = 120.0) -> Dict[str, object]:
    """Official repeatability between two keypoint sets expressed in the same frame.

    ``src_pts``, ``dst_pts``: ``(N, >=3)`` arrays of ``x, y, scale`` (e.g. source points
    and destination points warped into the source frame with
    :func:`keynet.base.geometry.warp_points`). ``overlap``: minimum IoU (0.6).
    ``dist_match_thresh``: radius for ``possible_matches`` (source points with at least
    one destination point within that distance; the benchmark passes its
    ``--pixel-threshold``). Pairs more than ``max_distance`` apart are never matched.

    Returns the official keys: ``rep_single_scale``, ``rep_multi_scale`` (percent),
    ``num_points_single_scale``, ``num_points_multi_scale`` (accepted correspondences),
    ``error_overlap_single_scale``, ``error_overlap_multi_scale`` (mean 1 - IoU of the
    accepted ones), ``total_num_points`` (min(N_src, N_dst)), ``possible_matches``,
    ``correspondences``, ``correspondences_m`` (``(K, 2)`` int arrays of
    ``[dst_index, src_index]``, the official column order). Empty input gives zeros.
    """
    src = _as_points(src_pts, "src_pts")
    dst = _as_points(dst_pts, "dst_pts")
    n_src, n_dst = src.shape[0], dst.shape[0]
    total = min(n_src, n_dst)
    out: Dict[str, object] = {
        "rep_single_scale": 0.0, "rep_multi_scale": 0.0,
        "num_points_single_scale": 0, "num_points_multi_scale": 0,
        "error_overlap_single_scale": 0.0, "error_overlap_multi_scale": 0.0,
        "total_num_points": total, "possible_matches": 0,
        "correspondences": np.zeros((0, 2), dtype=np.int64),
        "correspondences_m": np.zeros((0, 2), dtype=np.int64),
    }
    if n_src == 0 or n_dst == 0:
        return out

    # IoU is 0 beyond 2 * radius (both radii <= radius), so only nearer pairs can be
    # accepted; the official also skips pairs more than max_distance apart.
    rows, cols, d = pairs_within(src, dst, min(max_distance, 2.0 * radius))
    if dist_match_thresh <= min(max_distance, 2.0 * radius):
        close_rows = rows[d <= dist_match_thresh]
    else:
        close_rows = pairs_within(src, dst, dist_match_thresh)[0]
    out["possible_matches"] = int(np.unique(close_rows).shape[0])

    # The official threshold is 1 - overlap_err with overlap_err = 1 - overlap.
    thr = 1.0 - (1.0 - overlap)
    r_src, r_dst = src[rows, 2], dst[cols, 2]
    factor = radius / (np.maximum(r_src, r_dst) + np.finfo(float).eps)
    iou_m = circle_iou(factor * r_src, factor * r_dst, d)
    iou_s = circle_iou(np.full_like(d, radius), np.full_like(d, radius), d)

    for suffix, iou, corr_key in (("single_scale", iou_s, "correspondences"),
                                  ("multi_scale", iou_m, "correspondences_m")):
        ar, ac, asc = greedy_assignment(rows, cols, iou, thr)
        found = int(ar.shape[0])
        out[f"num_points_{suffix}"] = found
        out[f"rep_{suffix}"] = found / float(total) * 100.0
        out[f"error_overlap_{suffix}"] = float(np.sum(1.0 - asc) / (found + np.finfo(float).eps)) if found else 0.0
        out[corr_key] = np.stack([ac, ar], axis=1) if found else np.zeros((0, 2), dtype=np.int64)
    return out
