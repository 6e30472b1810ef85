"""HSequences_bench.repeatability: circle IoU, greedy assignment, repeatability."""
from __future__ import annotations

import numpy as np
import pytest

from HSequences_bench.repeatability import (circle_intersection_area, circle_iou, compute_repeatability,
                                            greedy_assignment, pairs_within)


def _numerical_intersection(r1: float, r2: float, d: float, n: int = 1500) -> float:
    """Area of the intersection by midpoint integration on an n x n grid."""
    lo, hi = -r1 - 1e-9, r1 + 1e-9
    step = (hi - lo) / n
    c = lo + step * (np.arange(n) + 0.5)
    x, y = np.meshgrid(c, c)
    inside = (x ** 2 + y ** 2 <= r1 ** 2) & ((x - d) ** 2 + y ** 2 <= r2 ** 2)
    return float(inside.sum()) * step * step


@pytest.mark.parametrize("r1,r2,d", [(30, 30, 0), (30, 30, 10), (30, 30, 45), (30, 30, 59.5), (30, 30, 61),
                                     (30, 12, 5), (30, 12, 25), (30, 12, 41), (8, 30, 30)])
def test_circle_intersection_against_numerical_integration(r1, r2, d):
    exact = float(circle_intersection_area(r1, r2, d))
    approx = _numerical_intersection(r1, r2, d)
    assert exact == pytest.approx(approx, abs=2e-3 * np.pi * min(r1, r2) ** 2 + 0.5)
    iou = float(circle_iou(r1, r2, d))
    union = np.pi * (r1 ** 2 + r2 ** 2) - approx
    assert iou == pytest.approx(approx / union, abs=3e-3)


def test_circle_iou_known_values():
    assert float(circle_iou(30, 30, 0)) == pytest.approx(1.0, abs=1e-9)
    assert float(circle_iou(30, 15, 3)) == pytest.approx(0.25, abs=1e-9)  # enclosed: area ratio
    assert float(circle_iou(30, 30, 60)) == 0.0
    np.testing.assert_allclose(circle_iou(np.array([30, 30]), 30, np.array([0, 60])), [1.0, 0.0], atol=1e-9)


def test_greedy_assignment_hand_made():
    # dense matrix (rows = src, cols = dst):
    #   [[0.9, 0.8, 0. ],
    #    [0.85,0.7, 0. ],
    #    [0.,  0.65,0.5]]
    # greedy: (0,0)=0.9, then (1,0) blocked, (0,1) blocked, (1,1)=0.7, (2,1) blocked, (2,2)=0.5 < 0.6 stop.
    m = np.array([[0.9, 0.8, 0.0], [0.85, 0.7, 0.0], [0.0, 0.65, 0.5]])
    rows, cols = np.nonzero(m > 0)
    r, c, s = greedy_assignment(rows, cols, m[rows, cols], threshold=0.6)
    assert list(zip(r.tolist(), c.tolist())) == [(0, 0), (1, 1)]
    np.testing.assert_allclose(s, [0.9, 0.7])
    # an optimal assignment would pick (0,1)+(1,0) = 1.65 > 1.6: greedy is not optimal by design
    r, c, _ = greedy_assignment(rows, cols, m[rows, cols], threshold=0.0)
    assert list(zip(r.tolist(), c.tolist())) == [(0, 0), (1, 1), (2, 2)]
    # ties go to the row-major first pair
    r, c, _ = greedy_assignment(np.array([1, 0]), np.array([0, 0]), np.array([0.7, 0.7]), 0.6)
    assert r.tolist() == [0] and c.tolist() == [0]


def test_pairs_within_matches_dense():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 200, (50, 2)), rng.uniform(0, 200, (60, 2))
    rows, cols, d = pairs_within(a, b, 30.0)
    dense = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    er, ec = np.nonzero(dense <= 30.0)
    np.testing.assert_array_equal(rows, er)
    np.testing.assert_array_equal(cols, ec)
    np.testing.assert_allclose(d, dense[er, ec], rtol=0, atol=1e-12)


def test_identical_sets_give_full_repeatability():
    rng = np.random.default_rng(4)
    pts = np.column_stack([rng.uniform(0, 500, 200), rng.uniform(0, 400, 200), rng.uniform(1, 5, 200),
                           rng.uniform(0, 1, 200)])
    res = compute_repeatability(pts, pts[::-1].copy())
    assert res["rep_single_scale"] == pytest.approx(100.0)
    assert res["rep_multi_scale"] == pytest.approx(100.0)
    assert res["num_points_single_scale"] == 200 and res["total_num_points"] == 200
    assert res["error_overlap_single_scale"] == pytest.approx(0.0, abs=1e-6)
    assert res["possible_matches"] == 200
    # correspondences are [dst_index, src_index]
    corr = res["correspondences"]
    np.testing.assert_array_equal(np.sort(corr[:, 0] + corr[:, 1]), np.full(200, 199))


def test_repeatability_shift_and_scale_behaviour():
    src = np.array([[100.0, 100.0, 2.0], [300.0, 100.0, 2.0]])
    # single-scale IoU of two radius-30 circles 10 px apart ~ 0.65 (accepted), 15 px ~ 0.53 (rejected)
    dst = src + np.array([[10.0, 0, 0], [15.0, 0, 0]])
    res = compute_repeatability(src, dst)
    assert res["num_points_single_scale"] == 1 and res["rep_single_scale"] == pytest.approx(50.0)
    assert res["error_overlap_single_scale"] == pytest.approx(1 - float(circle_iou(30, 30, 10)), rel=1e-9)
    # same place, scale ratio 2: multi-scale IoU = 0.25 (rejected), single-scale = 1
    dst2 = src * np.array([1, 1, 2.0])
    res2 = compute_repeatability(src, dst2)
    assert res2["num_points_single_scale"] == 2 and res2["num_points_multi_scale"] == 0
    # possible matches use the distance threshold
    assert compute_repeatability(src, dst, dist_match_thresh=12)["possible_matches"] == 1
    assert compute_repeatability(src, dst, dist_match_thresh=100)["possible_matches"] == 2


def test_repeatability_empty_and_denominator():
    pts = np.array([[1.0, 1.0, 1.0, 1.0]])
    for a, b in ((np.zeros((0, 4)), pts), (pts, np.zeros((0, 4))), (np.zeros((0,)), np.zeros((0,)))):
        res = compute_repeatability(a, b)
        assert res["rep_single_scale"] == 0.0 and res["rep_multi_scale"] == 0.0
        assert res["total_num_points"] == 0
    many = np.column_stack([np.arange(10) * 100.0, np.zeros(10), np.ones(10)])
    res = compute_repeatability(many[:1], many)
    assert res["rep_single_scale"] == pytest.approx(100.0) and res["total_num_points"] == 1
