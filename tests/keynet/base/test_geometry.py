"""keynet.base.geometry: homography I/O, point warping, scale transfer, common-region masks."""
from __future__ import annotations

import numpy as np
import pytest

from keynet.base import geometry as geo


def _random_homography(rng: np.random.Generator) -> np.ndarray:
    h = np.eye(3) + rng.normal(scale=[[0.1, 0.1, 20], [0.1, 0.1, 20], [1e-4, 1e-4, 0]], size=(3, 3))
    return h


def test_read_homography_and_errors(tmp_path):
    f = tmp_path / "H_1_2"
    f.write_text("1 0 5\n0 2 -3.5e0\n0 0 1\n")
    h = geo.read_homography(f)
    assert h.dtype == np.float64
    np.testing.assert_array_equal(h, [[1, 0, 5], [0, 2, -3.5], [0, 0, 1]])
    with pytest.raises(geo.HomographyError, match="not found"):
        geo.read_homography(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("1 0\n0 1\n")
    with pytest.raises(geo.HomographyError, match="bad"):
        geo.read_homography(bad)
    nan = tmp_path / "nan"
    nan.write_text("1 0 0\n0 nan 0\n0 0 1\n")
    with pytest.raises(geo.HomographyError, match="NaN"):
        geo.read_homography(nan)
    sing = tmp_path / "sing"
    sing.write_text("1 2 3\n2 4 6\n0 0 1\n")
    with pytest.raises(geo.HomographyError, match="singular"):
        geo.read_homography(sing)


def test_read_real_homography(hseq_mini):
    h = geo.read_homography(hseq_mini / "v_graffiti" / "H_1_2")
    assert h.shape == (3, 3) and abs(h[0, 0] - 0.88184) < 1e-12
    inv = geo.invert_homography(h)
    assert inv[2, 2] == 1.0
    np.testing.assert_allclose(inv @ h / (inv @ h)[2, 2], np.eye(3), atol=1e-12)


def test_local_affine_matches_finite_differences():
    rng = np.random.default_rng(0)
    h = _random_homography(rng)
    xy = rng.uniform(0, 500, size=(20, 2))
    jac = geo.local_affine(h, xy)
    step = 1e-4
    for k in range(2):
        dxy = np.zeros(2)
        dxy[k] = step
        plus = geo.warp_points(xy + dxy, h)
        minus = geo.warp_points(xy - dxy, h)
        np.testing.assert_allclose((plus - minus) / (2 * step), jac[:, :, k], rtol=1e-6, atol=1e-8)


def test_scale_transfer_equals_official_eigenvalue_form():
    """sqrt(s^2 + eps) sqrt|det J| equals the official 1 / sqrt(sqrt(e1 e2)) with e the
    eigenvalues of (J (s^2 + eps) J^T)^-1."""
    rng = np.random.default_rng(1)
    h = _random_homography(rng)
    pts = np.column_stack([rng.uniform(0, 600, 30), rng.uniform(0, 400, 30), rng.uniform(0.5, 8, 30),
                           rng.uniform(0, 1, 30)])
    out = geo.warp_points(pts, h)
    for p, o in zip(pts, out):
        tmp = p[2] ** 2 + np.finfo(np.float32).eps
        a = geo.local_affine(h, p[None, :2])[0]
        bmb = np.linalg.inv(a @ np.diag([tmp, tmp]) @ a.T)
        e = np.linalg.eigvals(bmb)
        expected = 1 / np.sqrt(np.sqrt(e[0] * e[1]))
        assert o[2] == pytest.approx(float(np.real(expected)), rel=1e-10)
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])


def test_pure_zoom_scales_points_and_scales():
    zoom = np.diag([2.5, 2.5, 1.0])
    pts = np.array([[10.0, 20.0, 3.0, 0.7], [0.0, 0.0, 1.0, 0.1]])
    out = geo.warp_points(pts, zoom)
    np.testing.assert_allclose(out[:, :2], pts[:, :2] * 2.5)
    np.testing.assert_allclose(out[:, 2], np.sqrt(pts[:, 2] ** 2 + geo.SCALE_EPS) * 2.5, rtol=1e-12)
    assert out[0, 2] == pytest.approx(7.5, rel=1e-7)
    # a homography given up to scale (h33 != 1) warps identically
    np.testing.assert_allclose(geo.warp_points(pts, zoom * 3.0), out, rtol=1e-12)
    # round trip through the inverse
    back = geo.warp_points(out, geo.invert_homography(zoom))
    np.testing.assert_allclose(back[:, :2], pts[:, :2], atol=1e-12)


def test_warp_points_shapes():
    h = np.eye(3)
    assert geo.warp_points(np.zeros((0, 4)), h).shape == (0, 4)
    np.testing.assert_array_equal(geo.warp_points(np.array([[1.0, 2.0]]), h), [[1.0, 2.0]])
    with pytest.raises(ValueError):
        geo.warp_points(np.zeros(3), h)


def test_common_region_masks_pure_translation():
    shape = (100, 120)
    tx, ty = 20.0, 10.0
    h_s2d = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])  # dst = src + t
    mask_src, mask_dst = geo.common_region_masks(geo.invert_homography(h_s2d), shape, shape)
    assert mask_src.dtype == bool and mask_src.shape == shape
    # src pixel (r, c) is valid when inside its own 15-px frame and its image in dst is too.
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    exp_src = (rr >= 15) & (rr < 85) & (cc >= 15) & (cc < 105) & (rr + ty >= 15) & (rr + ty < 85) \
        & (cc + tx >= 15) & (cc + tx < 105)
    exp_dst = (rr >= 15) & (rr < 85) & (cc >= 15) & (cc < 105) & (rr - ty >= 15) & (rr - ty < 85) \
        & (cc - tx >= 15) & (cc - tx < 105)
    np.testing.assert_array_equal(mask_src, exp_src)
    np.testing.assert_array_equal(mask_dst, exp_dst)


def test_common_region_masks_different_sizes():
    mask_src, mask_dst = geo.common_region_masks(np.eye(3), (70, 100), (68, 88))
    assert mask_src.shape == (70, 100) and mask_dst.shape == (68, 88)
    assert mask_src[15:53, 15:73].all() and not mask_src[53:].any() and not mask_src[:, 73:].any()
    assert mask_dst[15:53, 15:73].all() and mask_dst.sum() == 38 * 58


def test_points_in_mask_rounding_and_outside():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2, 3] = True
    mask[4, 4] = True
    xy = np.array([[3.4, 2.4], [2.5, 2.0], [3.5, 2.0], [4.5, 4.5], [-0.6, 0], [11.6, 2], [3, 9.5],
                   [np.nan, 1.0]])
    inside, outside = geo.points_in_mask(xy, mask)
    # round half to even: 2.5 -> 2, 3.5 -> 4, 4.5 -> 4, 9.5 -> 10 (outside)
    np.testing.assert_array_equal(inside, [True, False, False, True, False, False, False, False])
    np.testing.assert_array_equal(outside, [False, False, False, False, True, True, True, True])


def test_remove_border():
    a = np.ones((6, 7), dtype=bool)
    b = geo.remove_border(a, 2)
    assert b.sum() == 2 * 3 and b[2:4, 2:5].all()
    assert geo.remove_border(a, 0).all()
