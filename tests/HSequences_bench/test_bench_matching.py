"""Matching metrics, homography accuracy and the per-pair pipeline on synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from HSequences_bench.evaluate import BenchConfig, evaluate_pair
from HSequences_bench.homography import corner_error, error_auc, estimate_homography, homography_accuracy
from HSequences_bench.hsequences import ImagePair
from HSequences_bench.matching import match_distances, matching_scores, mma_precision, mutual_nearest_neighbours


def _grid_points(n_side: int = 12, step: float = 40.0, offset: float = 60.0) -> np.ndarray:
    g = np.arange(n_side) * step + offset
    x, y = np.meshgrid(g, g)
    n = x.size
    return np.column_stack([x.ravel(), y.ravel(), np.full(n, 2.0), np.linspace(1, 0.1, n)])


def _pair(h: np.ndarray, shape=(600, 600)) -> ImagePair:
    return ImagePair("v_synthetic", 2, shape, shape, h)


def test_mutual_nearest_neighbours():
    a = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    b = np.array([[9, 0], [0, 0.5], [100, 100], [0, 0.2]], dtype=np.float32)
    m = mutual_nearest_neighbours(a, b)
    # 0 <-> 3 (0.2 beats 0.5), 1 <-> 0; 2 -> 1 but 1 -> 3 is not mutual... b1's nearest is a0 (not mutual)
    assert m.tolist() == [[0, 3], [1, 0]]
    assert mutual_nearest_neighbours(a[:0], b).shape == (0, 2)
    bits = np.unpackbits(np.array([[0b10101010], [0b11110000]], dtype=np.uint8), axis=1)
    assert mutual_nearest_neighbours(bits, bits[::-1]).tolist() == [[0, 1], [1, 0]]
    packed = np.array([[0b10101010], [0b11110000]], dtype=np.uint8)
    assert mutual_nearest_neighbours(packed, packed[::-1], "hamming").tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError):
        mutual_nearest_neighbours(a, b, "hamming")


def test_matching_scores_threshold_is_strict_and_d2_is_inclusive():
    dist = np.array([3.0, 3.0, 0.5, 20.0])
    assert matching_scores(dist, 8, 4, 3)["num_matches"] == 1
    s = matching_scores(dist, 8, 4, 4)
    assert s["num_matches"] == 3 and s["match_score"] == pytest.approx(3 / 8)
    assert s["match_score_corr"] == pytest.approx(3 / (4 + 1e-6))
    assert matching_scores(dist, 0, 0, 4)["match_score"] == 0.0
    np.testing.assert_allclose(mma_precision(dist, [1, 3, 10]), [0.25, 0.75, 0.75])
    assert mma_precision(np.zeros(0)).tolist() == [0.0] * 10


def test_identical_points_repeatability_and_matching_one():
    pts = _grid_points()
    dsc = np.random.default_rng(0).normal(size=(len(pts), 16)).astype(np.float32)
    rec = evaluate_pair(pts, pts.copy(), _pair(np.eye(3)), BenchConfig(), dsc, dsc.copy())
    assert rec["n_src"] == rec["n_dst"] == rec["num_features"] > 50
    assert rec["rep_single_scale"] == pytest.approx(100.0) and rec["rep_multi_scale"] == pytest.approx(100.0)
    assert rec["match_score"] == pytest.approx(1.0) and rec["MMA"] == pytest.approx(1.0)
    assert rec["mma@1"] == 1.0 and rec["num_mutual_corresp"] == rec["num_features"]
    assert rec["h_error"] < 1e-6


@pytest.mark.parametrize("dst_to_src", [True, False])
def test_three_pixel_shift_fails_up_to_three_passes_from_four(dst_to_src):
    pts = _grid_points()
    h = np.array([[1, 0, 3.0], [0, 1, 0], [0, 0, 1]])  # dst = src + (3, 0); GT says so
    moved = pts.copy()
    moved[:, 0] += 6.0  # detections are 3 px off the ground truth
    dsc = np.random.default_rng(1).normal(size=(len(pts), 16)).astype(np.float32)
    rec = evaluate_pair(pts, moved, _pair(h), BenchConfig(dst_to_src=dst_to_src), dsc, dsc.copy())
    n = rec["num_features"]
    assert rec["num_mutual_corresp"] == n > 50
    for t in (1, 2, 3):
        assert rec[f"ms@{t}"] == 0.0 and rec[f"mma@{t}"] == (1.0 if t == 3 else 0.0)
    for t in range(4, 11):
        assert rec[f"ms@{t}"] == pytest.approx(1.0)
    assert rec["MMA"] == pytest.approx(0.7)
    # repeatability at 3 px: single-scale IoU(30, 30, 3) ~ 0.92 > 0.6
    assert rec["rep_single_scale"] == pytest.approx(100.0)
    # the RANSAC estimate is the shift by 6 px: corner error 3
    assert rec["h_error"] == pytest.approx(3.0, abs=1e-6)


def test_no_descriptors_gives_nan_matching():
    pts = _grid_points()
    rec = evaluate_pair(pts, pts.copy(), _pair(np.eye(3)), BenchConfig())
    assert rec["rep_single_scale"] == pytest.approx(100.0)
    assert np.isnan(rec["match_score"]) and np.isnan(rec["mma@3"]) and np.isnan(rec["h_error"])


def test_zero_detections_give_zero_scores():
    pts = _grid_points()
    dsc = np.ones((len(pts), 8), np.float32)
    rec = evaluate_pair(np.zeros((0, 4)), pts, _pair(np.eye(3)), BenchConfig(), np.zeros((0, 8), np.float32), dsc)
    assert rec["rep_single_scale"] == 0.0 and rec["match_score"] == 0.0 and rec["MMA"] == 0.0
    assert rec["num_mutual_corresp"] == 0 and rec["h_error"] == float("inf")


def test_outside_and_top_k_and_duplicates():
    pts = _grid_points()
    bad = np.vstack([pts, [[-500, 10, 2, 5.0], [10, 9000, 2, 5.0], [599.6, 300, 2, 5.0]]])
    rec = evaluate_pair(bad, pts, _pair(np.eye(3)), BenchConfig(top_k=None))
    assert rec["n_src_outside_image"] == 3 and rec["n_src"] == rec["n_dst"]
    rec = evaluate_pair(pts, pts, _pair(np.eye(3)), BenchConfig(top_k=10))
    assert rec["n_src"] == 10 and rec["rep_single_scale"] == pytest.approx(100.0)
    dup = np.vstack([pts, pts[:5]])
    rec = evaluate_pair(dup, pts, _pair(np.eye(3)), BenchConfig(top_k=None))
    assert rec["n_src"] == len(pts) + 5  # kept, as the official code
    rec = evaluate_pair(dup, pts, _pair(np.eye(3)), BenchConfig(top_k=None, drop_duplicates=True))
    assert rec["n_src"] == len(pts)


def test_homography_estimation_and_auc():
    rng = np.random.default_rng(2)
    h = np.array([[1.1, 0.05, 10], [-0.02, 0.95, 5], [1e-4, 0, 1]])
    src = rng.uniform(0, 500, (60, 2))
    dst_h = np.column_stack([src, np.ones(60)]) @ h.T
    dst = dst_h[:, :2] / dst_h[:, 2:]
    dst[:10] += rng.uniform(30, 60, (10, 2))  # outliers
    est = estimate_homography(src, dst)
    assert corner_error(est, h, (500, 500)) < 1e-3
    assert estimate_homography(src[:3], dst[:3]) is None
    assert corner_error(None, h, (500, 500)) == float("inf")
    acc = homography_accuracy([0.5, 2.0, 4.0, float("inf")])
    assert acc == {"1": 0.25, "3": 0.5, "5": 0.75}
    auc = error_auc([0.0, 0.0, float("inf"), float("inf")], thresholds=(1, 5))
    assert auc["1"] == pytest.approx(0.5) and auc["5"] == pytest.approx(0.5)
    # recall rises linearly from (0, 0) to (1 px, 1) (SuperGlue's trapezoid), then stays 1
    auc = error_auc([1.0], thresholds=(2,))
    assert auc["2"] == pytest.approx((0.5 + 1.0) / 2)


def test_match_distances():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    b = np.array([[3.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(match_distances(a, b, np.array([[0, 0], [1, 1]])), [3.0, 5.0])
