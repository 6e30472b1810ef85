"""Keypoint orientation: conventions, known answers, equivariance, patch sampling at an
angle, the LAF conversion and the angle's round trip through every output format."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from hardnet import OriNet, OrientationEstimator, extract_patches, load_orinet, save_orinet
from hardnet.data import relative_rotation
from hardnet.orientation import rotate_patches
from hardnet.orientation_training import angular_errors, equivariance_loss
from hardnet.patches import lafs_to_keypoints, patch_lafs
from keynet.base.geometry import angle_difference, rotation_homography, transfer_orientation, warp_points


def smooth_image(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 3.0)
    return (img - img.min()) / (img.max() - img.min()) * 255.0


def ramp(angle_deg: float, size: int = 200) -> np.ndarray:
    """Intensity growing along the direction ``angle_deg`` (image coordinates)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.deg2rad(angle_deg)
    return xx * np.cos(t) + yy * np.sin(t)


@pytest.mark.parametrize("angle", [0.0, 30.0, 100.0, 200.0, 290.0])
def test_gradient_orientation_of_a_ramp_is_its_direction(angle):
    est = OrientationEstimator("gradient", device="cpu")
    got = est.estimate(ramp(angle), np.array([[100.0, 100.0, 1.0], [90.0, 110.0, 0.8]]))
    assert angle_difference(got, angle).max() < 1.0
    assert got.dtype == np.float32 and (got >= 0).all() and (got < 360).all()


@torch.no_grad()
def test_orinet_is_exactly_equivariant_to_right_angles():
    torch.manual_seed(0)
    net = OriNet().eval()
    x = torch.rand(6, 1, 32, 32)
    a = torch.rad2deg(net.angle(x)).numpy()
    for k in (1, 2, 3):
        # rot90 (k=1) turns the content by -90 degrees in image coordinates
        b = torch.rad2deg(net.angle(torch.rot90(x, k, dims=(-2, -1)))).numpy()
        assert angle_difference(b, a - 90.0 * k).max() < 1e-3
    net_plain = OriNet(c4=False).eval()
    b = torch.rad2deg(net_plain.angle(torch.rot90(x, 1, dims=(-2, -1)))).numpy()
    assert angle_difference(b, torch.rad2deg(net_plain.angle(x)).numpy() - 90.0).max() > 1.0


def test_rotate_patches_matches_rot90_and_is_invertible():
    x = torch.rand(3, 1, 32, 32)
    # content turned by -90 degrees in image coordinates = np.rot90 / torch.rot90(k=1)
    assert torch.allclose(rotate_patches(x, torch.full((3,), -math.pi / 2)), torch.rot90(x, 1, dims=(-2, -1)),
                          atol=1e-5)
    smooth = torch.from_numpy(cv2.resize(smooth_image(40, 40), (32, 32)))[None, None].repeat(2, 1, 1, 1)
    back = rotate_patches(rotate_patches(smooth, torch.tensor([0.5, 2.0])), torch.tensor([-0.5, -2.0]))
    centre = slice(10, 22)
    d = (back - smooth)[..., centre, centre].abs()
    assert d.mean() < 1.5 and d.max() < 5.0  # two bilinear resamplings of a 0..255 patch (wrong sense: ~40)


@pytest.mark.parametrize("angle", [90.0, 33.0])
def test_patch_at_an_angle_equals_patch_of_the_rotated_image(angle):
    """Cutting the patch of a point rotated by its orientation in the image = cutting the
    upright patch... of the image rotated so that the orientation becomes 0."""
    img = smooth_image()
    h_rot, (h2, w2) = rotation_homography(img.shape, angle)
    rotated = cv2.warpPerspective(img, h_rot, (w2, h2), flags=cv2.INTER_CUBIC)
    kpts = np.array([[100.0, 80.0, 0.5], [120.0, 70.0, 0.4]])
    ori = np.array([0.0, 50.0])
    k2 = warp_points(kpts, h_rot)
    ori2 = transfer_orientation(h_rot, kpts[:, :2], ori)
    assert angle_difference(ori2, ori - angle).max() < 1e-9  # counter-clockwise on screen
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    p1 = extract_patches(t(img), t(kpts), orientation=torch.deg2rad(t(ori)))
    p2 = extract_patches(t(rotated), t(k2), orientation=torch.deg2rad(t(ori2)))
    tol = 1e-3 if angle == 90.0 else 0.5  # 90 degrees: a pixel permutation; else two interpolations
    assert (p1 - p2).abs().mean() < tol and (p1 - p2).abs().max() < max(8 * tol, 1e-3)
    # and the upright patch of the rotated image is a different (turned) patch
    p3 = extract_patches(t(rotated), t(k2))
    assert (p1 - p3).abs().mean() > 5 * tol


def test_estimates_turn_with_the_image():
    img = smooth_image(seed=3)
    kpts = np.array([[x, y, 0.6] for x in (70.0, 100.0, 130.0) for y in (60.0, 80.0, 100.0)])
    for angle in (90.0, 180.0):
        h_rot, (h2, w2) = rotation_homography(img.shape, angle)
        rotated = cv2.warpPerspective(img, h_rot, (w2, h2))
        k2 = warp_points(kpts, h_rot)
        torch.manual_seed(0)
        for est in (OrientationEstimator("gradient", device="cpu"),
                    OrientationEstimator("learned", OriNet().eval(), device="cpu")):
            a1, a2 = est.estimate(img, kpts), est.estimate(rotated, k2)
            err = angle_difference(transfer_orientation(h_rot, kpts[:, :2], a1), a2)
            assert err.max() < 0.5, (est.method, angle, err)


def test_lafs_are_korninas_patches_and_round_trip():
    from kornia.feature import get_laf_orientation
    from kornia.feature.laf import extract_patches_simple

    img = torch.from_numpy(smooth_image())[None, None]
    k = torch.tensor([[100.0, 90.0, 0.5], [120.0, 100.0, 0.3]])
    o = torch.tensor([0.3, -2.0])
    lafs = patch_lafs(k, o)
    ours = extract_patches(img, k, orientation=o)
    theirs = extract_patches_simple(img, lafs, 32)[0]
    assert (ours - theirs).abs().max() < 1e-3
    assert torch.allclose(get_laf_orientation(lafs).flatten(), -torch.rad2deg(o), atol=1e-4)
    k2, o2 = lafs_to_keypoints(lafs)
    assert torch.allclose(k2, k, atol=1e-4) and torch.allclose(o2, o, atol=1e-5)


def test_relative_rotation_and_equivariance_loss():
    h, _ = rotation_homography((100, 120), 40.0)
    assert np.allclose(relative_rotation(h, np.array([[10.0, 20.0], [50.0, 60.0]])), -40.0)
    va = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    angle = torch.tensor([0.5, -1.0])
    c, s = torch.cos(angle), torch.sin(angle)
    vb = torch.stack([c * va[:, 0] - s * va[:, 1], s * va[:, 0] + c * va[:, 1]], 1) * 3.0
    assert float(equivariance_loss(va, vb, angle)) < 1e-6
    assert abs(float(equivariance_loss(va, -vb, angle)) - 2.0) < 1e-6
    assert np.allclose(angular_errors(np.array([0.0, 3.0]), np.array([math.pi / 2, 3.0]), np.array([90.0, 350.0])),
                       [0.0, 10.0], atol=1e-6)


@torch.no_grad()
def test_orinet_weights_round_trip_and_errors(tmp_path):
    from hardnet import HardNetWeightsError

    torch.manual_seed(1)
    net = OriNet(width=8).eval()
    p = tmp_path / "ori.pt"
    save_orinet(p, net, {"note": "x"})
    back, meta = load_orinet(p)
    x = torch.rand(4, 1, 32, 32)
    assert back.width == 8 and meta["note"] == "x"
    assert torch.allclose(back.angle(x), net.angle(x))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(HardNetWeightsError, match="bad.pt"):
        load_orinet(bad)
    with pytest.raises(HardNetWeightsError, match="not found"):
        load_orinet(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="method"):
        OrientationEstimator("sift")
