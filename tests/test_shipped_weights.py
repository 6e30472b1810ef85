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

from hardnet import load_hardnet
from keynet import load_keynet

ROOT = Path(__file__).resolve().parents[1]
IMG = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)

PINS = {
    "hardnet.pt": ("a7a3d34080a8c751237ba20abfbe088e219e8846d65468ec8083ee963b746f69",
                   [[0.0084, 0.1046, 0.1509, 0.0339], [0.0038, 0.0947, 0.0677, 0.0353]]),
    "tiny_keynet.pt": ("27b23e7980b71f8b49633cd550fa91f43ad9803a95dcdb00ac96328b5e406480",
                       [8.400751, -0.210579, -0.229928]),
    "keynet.pt": ("46c30664d84f717639c445a7757640a30c8af4f93b5e12201df41033bf79f4bf",
                  [125.570168, -0.211467, -0.124695]),
}


def figure(name: str) -> np.ndarray:
    path = ROOT / "pretrained_nets" / name
    with torch.no_grad():
        if name == "hardnet.pt":
            model, _ = load_hardnet(path)
            crops = [IMG[100:132, 100:132], IMG[300:332, 250:282]]
            p = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)[:, None]
            return model.eval()(p)[:, :4].numpy()
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
