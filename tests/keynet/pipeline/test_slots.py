"""The registration slots of the pipeline: a second descriptor (RootSIFT by OpenCV at our
keypoints), a new matcher, and the settings validated once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import keynet
from keynet.pipeline import config, descriptors, matchers
from keynet.pipeline.config import FeatureConfig, MatcherConfig
from keynet.pipeline.descriptors import (DESCRIPTORS, DescriptorEntry, RootSIFTDescriptor, register_descriptor,
                                         rootsift)
from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector
from keynet.pipeline.matchers import MATCHER_REGISTRY, Matcher, match_descriptors, register_matcher

ROOT = Path(__file__).resolve().parents[3]
TEST_IM = ROOT / "test_im" / "test_im.png"


def _texture(h: int = 160, w: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.uniform(0, 1, (h, w)), (0, 0), 2.0)
    return (img - img.min()) / (img.max() - img.min())


KPTS = np.array([[60.0, 70.0, 1.5, 1.0], [120.0, 80.0, 2.0, 0.5], [100.0, 100.0, 1.0, 0.2]])


def test_rootsift_is_opencv_sift_at_the_hardnet_support_then_root():
    img = _texture()
    got = RootSIFTDescriptor().describe(img, KPTS)
    # independently: OpenCV SIFT with size 64/6 * scale on the 8-bit image, L1-normalised, square root
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    kps = [cv2.KeyPoint(float(x), float(y), float(64.0 / 6.0 * s), 0.0) for x, y, s in KPTS[:, :3]]
    _, sift = cv2.SIFT_create().compute(u8, kps)
    want = np.sqrt(sift / sift.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (3, 128) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_rootsift_uses_the_orientation_and_refuses_affine_shapes():
    img = _texture()
    up = RootSIFTDescriptor().describe(img, KPTS)
    turned = RootSIFTDescriptor().describe(img, KPTS, np.array([90.0, 90.0, 90.0]))
    assert not np.allclose(up, turned)
    zero = RootSIFTDescriptor().describe(img, KPTS, np.zeros(3))
    np.testing.assert_allclose(zero, up, atol=1e-6)
    with pytest.raises(ValueError, match="isotropic"):
        RootSIFTDescriptor().describe(img, KPTS, None, np.tile(np.eye(2), (3, 1, 1)))
    assert RootSIFTDescriptor().describe(img, KPTS[:0]).shape == (0, 128)


def test_rootsift_normalisation():
    d = np.array([[1.0, 3.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(rootsift(d), [[0.5, np.sqrt(0.75), 0.0, 0.0]], atol=1e-6)


def test_rootsift_from_the_python_api_and_the_loader():
    assert isinstance(load_descriptor("rootsift"), RootSIFTDescriptor)
    kp, desc = keynet.extract(str(TEST_IM), descriptor="rootsift")
    assert desc.shape == (len(kp), 128) and len(kp) > 100
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)
    f = Extractor(load_detector(num_points=200), load_descriptor("rootsift")).features(str(TEST_IM))
    np.testing.assert_allclose(f.descriptors, RootSIFTDescriptor().describe(
        load_detector().prepare(str(TEST_IM)), f.keypoints), atol=1e-6)


def test_rootsift_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "keynet", "extract", "--descriptor", "rootsift", "--results-dir",
                          str(tmp_path), "--num-points", "300", "--progress", "false"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    dsc = np.load(next(tmp_path.rglob("*.dsc.npy")))
    assert dsc.shape[1] == 128 and (dsc >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(dsc, axis=1), 1.0, atol=1e-4)


def test_the_fingerprint_names_a_registered_descriptor_and_keeps_the_others():
    fp = json.loads(FeatureConfig(descriptor="rootsift").fingerprint())
    assert fp["descriptor"] == "rootsift"
    assert json.loads(FeatureConfig().fingerprint())["descriptor"] == "default"
    weights = json.loads(FeatureConfig(descriptor="some/hardnet.pt").fingerprint())["descriptor"]
    assert weights == str(Path("some/hardnet.pt").resolve())


def test_a_new_descriptor_is_one_registration(monkeypatch):
    monkeypatch.setattr(descriptors, "DESCRIPTORS", dict(DESCRIPTORS))

    class Ones:
        def describe(self, image, kpts, orientations=None, shapes=None):
            return np.ones((len(kpts), 8), np.float32)

    register_descriptor(DescriptorEntry("ones", lambda device: Ones(), "'ones'", lambda: "v1"))
    assert isinstance(load_descriptor("ones"), Ones)
    with pytest.raises(ValueError, match="registered already"):
        register_descriptor(DescriptorEntry("ones", lambda device: Ones(), "'ones'", lambda: "v1"))


def test_the_wide_baseline_spec_takes_a_registered_descriptor():
    from HSequences_bench.harness import wide_baseline_methods as wm
    method = wm.build_method("keynet:descriptor=rootsift", wm.MethodOptions(num_points=100))
    assert "descriptor=rootsift" in method.tag and "hardnet=" not in method.tag


# ----------------------------------------------------------------------------- matchers
def test_the_registry_holds_the_documented_matchers_and_defaults():
    assert matchers.MATCHERS == ("smnn", "snn", "mnn", "nn", "adalam")
    assert matchers.DEFAULT_THRESHOLDS == {"smnn": 0.9, "snn": 0.8, "mnn": None, "nn": None, "adalam": 200.0}
    assert MatcherConfig().method == "smnn" and MatcherConfig().resolved_threshold == 0.9
    assert all(MATCHER_REGISTRY[m].help for m in matchers.MATCHERS)


def test_a_new_matcher_is_one_registration(monkeypatch):
    monkeypatch.setattr(matchers, "MATCHER_REGISTRY", dict(MATCHER_REGISTRY))
    monkeypatch.setattr(config, "MATCHER_REGISTRY", matchers.MATCHER_REGISTRY)
    import torch

    def first_k(d0, d1, th, frames):  # image-0 descriptor i matched with image-1 descriptor i
        n = min(len(d0), len(d1), int(th))
        return torch.stack([torch.arange(n), torch.arange(n)], 1)

    register_matcher(Matcher("first", first_k, 3.0, "how many", "the first descriptors, in order"))
    d = np.eye(5, dtype=np.float32)
    m, s = match_descriptors(d, d, MatcherConfig("first"))
    np.testing.assert_array_equal(m, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_allclose(s, 1.0)
    with pytest.raises(ValueError, match="unknown matcher"):
        MatcherConfig("second")


# ----------------------------------------------------------------------------- settings once
@pytest.mark.parametrize("bad", [{"view_synthesis": "some"}, {"min_inliers": 0}, {"min_inliers": 2.5}])
def test_view_settings_are_validated_by_the_matcher_config(bad):
    with pytest.raises(ValueError):
        MatcherConfig(**bad)


def test_features_fingerprint_refuses_an_unknown_view_synthesis():
    from keynet.pipeline.stages import features_fingerprint
    with pytest.raises(ValueError, match="unknown view synthesis"):
        features_fingerprint(FeatureConfig(), "some")


def test_the_view_levels_rule():
    from keynet.pipeline.views import LAST_LEVEL, NUM_LEVELS, level_prefix, levels_to_match
    assert list(levels_to_match("auto")) == list(range(NUM_LEVELS)) and list(levels_to_match("full")) == [LAST_LEVEL]
    assert LAST_LEVEL == 2
    assert level_prefix(np.array([0, 0, 1, 1, 1, 2]), 1) == 5 and level_prefix(np.array([0, 1]), 0) == 1


def test_with_views_replaces_only_what_is_given():
    base = MatcherConfig("snn", 0.7)
    assert base.with_views() is base
    v = base.with_views("auto")
    assert (v.method, v.threshold, v.view_synthesis, v.min_inliers) == ("snn", 0.7, "auto", 15)
    assert base.with_views(min_inliers=30).min_inliers == 30
