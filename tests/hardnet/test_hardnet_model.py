"""HardNet architecture, official-layout loading, and patch geometry."""
import math

import cv2
import numpy as np
import pytest
import torch

from hardnet import HardNet, HardNetDescriptor, HardNetWeightsError, extract_patches, load_hardnet, save_hardnet


def test_output_shape_and_unit_norm():
    torch.manual_seed(0)
    m = HardNet().eval()
    y = m(torch.rand(5, 1, 32, 32))
    assert y.shape == (5, 128)
    assert torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="32, 32"):
        m(torch.rand(2, 1, 64, 64))


def test_fast_path_equals_plain_modules():
    """Folded batch norm, fused ReLU and the matmul first layer compute the same network."""
    torch.manual_seed(0)
    m = HardNet()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = torch.rand(33, 1, 32, 32)
    with torch.no_grad():
        fast = HardNetDescriptor(m, device="cpu").describe_patches(x)
        plain = m(x)
        also_plain = HardNetDescriptor(m, device="cpu", fast=False).describe_patches(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(also_plain, plain)


def test_official_layout_loads_strictly(tmp_path):
    torch.manual_seed(0)
    m = HardNet()
    keys = list(m.state_dict())
    # the DagnyT/hardnet layout: conv weights at features.{0,3,6,9,12,15,19}, affine-free BN stats
    assert [k for k in keys if k.endswith("weight")] == [f"features.{i}.weight" for i in (0, 3, 6, 9, 12, 15, 19)]
    torch.save({"epoch": 9, "state_dict": m.state_dict()}, tmp_path / "HardNet++.pth")
    m2, meta = load_hardnet(tmp_path / "HardNet++.pth")
    assert meta["source_format"] == "hardnet-official"
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(m.eval()(x), m2(x))
    bad = dict(m.state_dict())
    bad["features.0.weight"] = torch.zeros(16, 1, 3, 3)
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(HardNetWeightsError, match="bad.pth"):
        load_hardnet(tmp_path / "bad.pth")
    with pytest.raises(HardNetWeightsError, match="not found"):
        load_hardnet(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(HardNetWeightsError, match="junk.pth"):
        load_hardnet(tmp_path / "junk.pth")
    save_hardnet(tmp_path / "ours.pt", m, {"k": 1})
    assert load_hardnet(tmp_path / "ours.pt")[1]["k"] == 1


def _texture(h=200, w=220):
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return (img - img.min()) / (img.max() - img.min())


def test_patch_geometry_under_rotation_and_scale():
    """A patch of a rotated+scaled image equals the patch of the original at the mapped
    keypoint (with the scale and the orientation transferred)."""
    img = _texture()
    h, w = img.shape
    ang, s = 30.0, 1.5
    a = cv2.getRotationMatrix2D((w / 2, h / 2), ang, s)  # 2x3, maps original -> warped
    warped = cv2.warpAffine(img, a, (int(w * 1.6), int(h * 1.6)), flags=cv2.INTER_CUBIC)
    pts = np.array([[100.0, 95.0, 0.6], [120.0, 110.0, 0.5]])
    mapped = (a[:, :2] @ pts[:, :2].T).T + a[:, 2]
    kw = np.c_[mapped, pts[:, 2] * s]
    theta = -math.radians(ang)  # OpenCV's positive angle is counter-clockwise in the image
    p0 = extract_patches(torch.from_numpy(img), torch.from_numpy(pts))
    p1 = extract_patches(torch.from_numpy(warped), torch.from_numpy(kw),
                         orientation=torch.full((2,), theta, dtype=torch.float64))
    err = (p0 - p1).abs().mean() / p0.std()
    assert err < 0.05, float(err)
    # without the orientation the patches differ clearly
    p2 = extract_patches(torch.from_numpy(warped), torch.from_numpy(kw))
    assert (p0 - p2).abs().mean() / p0.std() > 4 * err


def test_patch_covers_64_scale_pixels():
    img = np.zeros((200, 200), np.float32)
    img[:, 100:] = 1.0  # vertical edge at x = 99.5
    p = extract_patches(torch.from_numpy(img), torch.tensor([[99.5, 100.0, 0.5]]))[0, 0].numpy()
    # 32 samples span x = 99.5 -/+ 16 px: the edge is in the middle of the patch
    assert p[:, :16].max() == 0 and p[:, 16:].min() > 1 - 1e-5
    # the first and last samples sit 16 px (= 64 * 0.5 / 2) from the centre
    ramp = np.tile(np.arange(200, dtype=np.float32), (200, 1))
    q = extract_patches(torch.from_numpy(ramp), torch.tensor([[99.5, 100.0, 0.5]]))[0, 0].numpy()
    assert abs(q[0, 0] - 83.5) < 1e-3 and abs(q[0, -1] - 115.5) < 1e-3


def test_descriptor_chunks_equal_one_batch():
    torch.manual_seed(0)
    img = _texture()
    kp = np.c_[np.random.default_rng(0).uniform(20, 180, (37, 2)), np.full(37, 0.7)]
    m = HardNet()
    a = HardNetDescriptor(m, device="cpu", batch_size=8).describe(img, kp)
    b = HardNetDescriptor(m, device="cpu", batch_size=100).describe(img, kp)
    assert a.shape == (37, 128) and np.allclose(a, b, atol=1e-5)
    assert HardNetDescriptor(m, device="cpu").describe(img, np.zeros((0, 4))).shape == (0, 128)
