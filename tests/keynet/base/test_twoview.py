"""Two-view estimation (keynet.base.twoview) on synthetic correspondences with known H / F / pose."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from HSequences_bench.homography import estimate_homography as bench_homography
from keynet.base import twoview

K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])


def _homography_data(seed=0, n=300, outlier_share=0.3, noise=0.3):
    rng = np.random.default_rng(seed)
    H = np.array([[1.1, 0.05, 20], [-0.03, 0.95, -10], [1e-4, -5e-5, 1]])
    x0 = rng.uniform(0, 640, (n, 2))
    p = np.column_stack([x0, np.ones(n)]) @ H.T
    x1 = p[:, :2] / p[:, 2:] + rng.normal(0, noise, (n, 2))
    out = rng.random(n) < outlier_share
    x1[out] += rng.uniform(30, 120, (out.sum(), 2)) * rng.choice([-1, 1], (out.sum(), 2))
    return H, x0, x1, out


def _pose_data(seed=1, n=300, outlier_share=0.3):
    rng = np.random.default_rng(seed)
    X = rng.uniform([-2, -2, 4], [2, 2, 8], (n, 3))
    R, _ = cv2.Rodrigues(np.array([0.05, -0.2, 0.03]))
    t = np.array([1.0, 0.1, 0.05])

    def proj(R_, t_):
        p = (X @ R_.T + t_) @ K.T
        return p[:, :2] / p[:, 2:]

    a, b = proj(np.eye(3), np.zeros(3)), proj(R, t)
    out = rng.random(n) < outlier_share
    b[out] += rng.uniform(20, 60, (out.sum(), 2)) * rng.choice([-1, 1], (out.sum(), 2))
    return R, t, a, b, out


@pytest.mark.parametrize("method", sorted(twoview.METHODS))
def test_homography_inliers_and_matrix(method):
    H, x0, x1, out = _homography_data()
    r = twoview.estimate_homography(x0, x1, method=method)
    assert r.ok
    # the mask separates the planted outliers (displaced by >= 30 px) from the inliers
    assert (r.inliers == ~out).mean() > 0.98
    assert np.median(twoview.homography_transfer_error(r.matrix, x0[~out], x1[~out])) < 1.0
    Hn = r.matrix / r.matrix[2, 2]
    assert np.allclose(Hn[:2, :2], H[:2, :2], atol=2e-2)


def test_fundamental_inliers_satisfy_epipolar_constraint():
    R, t, a, b, out = _pose_data()
    r = twoview.estimate_fundamental(a, b)
    assert r.ok and r.matrix.shape == (3, 3)
    assert (r.inliers == ~out).mean() > 0.97
    # the ground-truth F: K^-T [t]x R K^-1
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F_gt = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    assert np.max(twoview.epipolar_distance(F_gt, a[~out], b[~out])) < 1e-6
    assert np.median(twoview.epipolar_distance(r.matrix, a[~out], b[~out])) < 0.5


def test_essential_recovers_the_relative_pose():
    R, t, a, b, out = _pose_data()
    r = twoview.estimate_essential(a, b, K)
    assert r.ok
    assert (r.inliers == ~out).mean() > 0.97
    assert twoview.rotation_angle_deg(r.R.T @ R) < 0.1
    assert np.degrees(np.arccos(np.clip(r.t @ (t / np.linalg.norm(t)), -1, 1))) < 0.5
    # two different cameras: scaling image 1 and its intrinsics alike changes nothing
    K1 = K.copy()
    K1[:2] *= 2.0
    r2 = twoview.estimate_essential(a, b * 2.0, K, K1, threshold=2.0)
    assert twoview.rotation_angle_deg(r2.R.T @ R) < 0.1


def test_too_few_points_and_bad_method():
    H, x0, x1, _ = _homography_data(n=3, outlier_share=0)
    r = twoview.estimate_homography(x0, x1)
    assert not r.ok and r.inliers.shape == (3,) and not r.inliers.any()
    assert not twoview.estimate_fundamental(x0, x1).ok
    with pytest.raises(ValueError, match="unknown robust estimator"):
        twoview.estimate_homography(x0, x1, method="nope")
    with pytest.raises(ValueError, match="same length"):
        twoview.estimate_homography(x0, x1[:2])


def test_benchmark_estimate_is_opencv_default_ransac():
    """The HSequences metric goes through keynet.base.twoview but still gives exactly the old
    ``cv2.findHomography(src, dst, cv2.RANSAC, thr)`` result."""
    for seed in range(3):
        _, x0, x1, _ = _homography_data(seed=seed, outlier_share=0.5, noise=1.0)
        for thr in (1.0, 3.0):
            ref, _ = cv2.findHomography(x0.reshape(-1, 1, 2), x1.reshape(-1, 1, 2), cv2.RANSAC, thr)
            assert np.array_equal(bench_homography(x0, x1, thr), ref)
    assert bench_homography(x0[:3], x1[:3]) is None
