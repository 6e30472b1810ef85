"""Regression pins of the weights shipped in pretrained_nets/: a damaged, truncated or
swapped file fails here. Each pin is the file's SHA-256 and a cheap figure computed from
it (descriptors of two patches of the test image; the maximum, mean and one pixel of the
response on a crop of it), so a
deliberate re-training must update both, with the training record."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet import load_hardnet, load_orinet
from hardnet.weights import load_affnet
from keynet import load_keynet

ROOT = Path(__file__).resolve().parents[1]
IMG = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)

PINS = {
    "hardnet.pt": ("2e5094de6139c6ea452f2d90a3f6c7dba1fe310f2b41438114c4762f9cdd61b3",
                   [[-0.0546, 0.0931, 0.0963, -0.0095], [0.0215, 0.0802, 0.0801, -0.0160]]),
    "hardnet_imagenet.pt": ("a7a3d34080a8c751237ba20abfbe088e219e8846d65468ec8083ee963b746f69",
                            [[0.0084, 0.1046, 0.1509, 0.0339], [0.0038, 0.0947, 0.0677, 0.0353]]),
    "hardnet_real.pt": ("d479124efd8bf76eadd4f0dd40425ae70e04938fefdcfe8a7b58fdad0cf72afc",
                        [[-0.0579, 0.0880, 0.1791, -0.0517], [0.0305, 0.2038, 0.1076, -0.0053]]),
    "tiny_keynet.pt": ("27b23e7980b71f8b49633cd550fa91f43ad9803a95dcdb00ac96328b5e406480",
                       [8.400751, -0.210579, -0.229928]),
    "keynet.pt": ("46c30664d84f717639c445a7757640a30c8af4f93b5e12201df41033bf79f4bf",
                  [125.570168, -0.211467, -0.124695]),
    "orinet.pt": ("9958761dcad3848f373c6a1f1b0e7fbeefbbc03b74902441bed3d18e4d6d991e",
                  [150.42757, -48.22395]),
    "affnet.pt": ("305ac797605a0379371d5be5a4fb7ee699ddd471bdcd1661c6f4dd5691a7d554",
                  [[1.286850, -0.151793, 0.777092], [1.029105, -0.138963, 0.971718]]),
    "affnet_imagenet.pt": ("6c0d99ab231663147b4dbaed29705c5c5f34e2385272b09c98eac4bdf43e3fd1",
                           [[1.138560, -0.293006, 0.878302], [0.972890, -0.104297, 1.027865]]),
}


def figure(name: str) -> np.ndarray:
    path = ROOT / "pretrained_nets" / name
    with torch.no_grad():
        crops = [IMG[100:132, 100:132], IMG[300:332, 250:282]]
        p = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)[:, None]
        if name.startswith("hardnet"):
            model, _ = load_hardnet(path)
            return model.eval()(p)[:, :4].numpy()
        if name == "orinet.pt":
            model, _ = load_orinet(path)
            return torch.rad2deg(model.angle(p)).numpy()
        if name.startswith("affnet"):  # the shapes' a11, a21, a22 (hardnet.affnet convention)
            model, _ = load_affnet(path)
            a = model(p)
            return torch.stack([a[:, 0, 0], a[:, 1, 0], a[:, 1, 1]], 1).numpy()
        model, _ = load_keynet(path)
        x = torch.from_numpy(IMG[:128, :160].astype(np.float32) / float(IMG.max()))[None, None]
        r = model.eval()(x)[0, 0]
        return np.array([float(r.max()), float(r.mean()), float(r[64, 80])])


@pytest.mark.parametrize("name", sorted(PINS))
def test_shipped_weights_are_the_recorded_ones(name):
    digest, values = PINS[name]
    path = ROOT / "pretrained_nets" / name
    assert path.is_file(), f"missing shipped weights {path}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} changed: update the pin with its record"
    np.testing.assert_allclose(figure(name), np.array(values), atol=2e-4)


def test_shipped_descriptor_names_resolve():
    """'default' names pretrained_nets/hardnet.pt, 'real' the thermal-preset HardNet, 'imagenet'
    the earlier default (ImageNet pairs only)."""
    from keynet.pipeline.extraction import load_descriptor

    for name, file in (("default", "hardnet.pt"), ("real", "hardnet_real.pt"), ("imagenet", "hardnet_imagenet.pt")):
        desc = load_descriptor(name, device="cpu")
        crops = [IMG[100:132, 100:132], IMG[300:332, 250:282]]
        p = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)[:, None]
        with torch.no_grad():
            got = desc.model.eval()(p)[:, :4].numpy()
        np.testing.assert_allclose(got, np.array(PINS[file][1]), atol=2e-4)


def test_shipped_affnet_names_resolve():
    """'learned' names pretrained_nets/affnet.pt, 'learned-imagenet' the AffNet trained for the
    ImageNet-only HardNet."""
    from hardnet.weights import load_affine

    crops = [IMG[100:132, 100:132], IMG[300:332, 250:282]]
    p = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)[:, None]
    for name, file in (("learned", "affnet.pt"), ("learned-imagenet", "affnet_imagenet.pt")):
        with torch.no_grad():
            a = load_affine(name, device="cpu").model.eval()(p)
        got = torch.stack([a[:, 0, 0], a[:, 1, 0], a[:, 1, 1]], 1).numpy()
        np.testing.assert_allclose(got, np.array(PINS[file][1]), atol=2e-4)


def test_shipped_names_resolve():
    """'default'/'keynet' and 'tiny' name the shipped Key.Net and Tiny-Key.Net."""
    from keynet import load_detector

    assert sum(p.numel() for p in load_detector("tiny", device="cpu").model.parameters()) == 281
    assert sum(p.numel() for p in load_detector("default", device="cpu").model.parameters()) == 5921


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_shipped_detectors_deliver_the_requested_points(name):
    """A shipped detector must return the points asked for on an ordinary image: a network
    whose responses are mostly negative returns fewer (only positive maxima are kept), which
    also inflates repeatability at a fixed top-k (docs/training.md, weight averaging)."""
    from keynet import load_detector

    kpts = load_detector(name, device="cpu").detect(str(ROOT / "test_im" / "test_im.png"))
    assert len(kpts) >= 1400, f"{name}: only {len(kpts)} of 1500 keypoints"


def test_shipped_orientation_turns_with_the_image():
    """The shipped OriNet on Key.Net points of the test image and of the image turned by 30
    degrees (exactly transformed points): its estimates follow the rotation (median error
    1.7 degrees when recorded) and fail less often than the dominant gradient's."""
    from hardnet import OrientationEstimator
    from keynet import load_detector
    from keynet.base.geometry import angle_difference, rotation_homography, transfer_orientation, warp_points

    img = IMG.astype(np.float32)
    kpts = load_detector("default", num_points=300, device="cpu").detect(img)
    h_rot, (h, w) = rotation_homography(img.shape, 30.0)
    rotated = cv2.warpPerspective(img, h_rot, (w, h))
    k2 = warp_points(kpts, h_rot)
    model, _ = load_orinet(ROOT / "pretrained_nets" / "orinet.pt")
    share = {}
    for name, est in (("learned", OrientationEstimator("learned", model, device="cpu")),
                      ("gradient", OrientationEstimator("gradient", device="cpu"))):
        err = angle_difference(transfer_orientation(h_rot, kpts[:, :2], est.estimate(img, kpts)),
                               est.estimate(rotated, k2))
        share[name] = float(np.mean(err <= 15.0))
        if name == "learned":
            assert np.median(err) < 4.0, np.median(err)
    assert share["learned"] > 0.85 and share["learned"] > share["gradient"], share
