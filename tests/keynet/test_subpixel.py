"""Sub-pixel keypoints (keynet.subpixel): the parabola vertex, the same detections as the
official detector, and better-localised points on a real pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

import keynet
from keynet.detection import subpixel_offsets
from keynet.subpixel import SubpixelKeyNetDetector

ROOT = Path(__file__).resolve().parents[2]


def test_offsets_find_the_peak_of_a_sampled_blob():
    ys, xs = np.mgrid[0:20, 0:30].astype(float)
    x0, y0 = 10.3, 7.8
    score = np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 2.0**2))
    off = subpixel_offsets(score, np.array([[8, 10]]))
    assert np.allclose(off, [[0.3, -0.2]], atol=0.03)
    # not a maximum along x (a slope): no move along x; outer frame: no move at all
    slope = np.tile(np.arange(30.0), (20, 1)) * 0.01 + score
    assert subpixel_offsets(-np.abs(xs - 5.0), np.array([[3, 5]]))[0, 0] == 0
    assert np.all(subpixel_offsets(slope, np.array([[0, 0], [19, 29]])) == 0)


def test_same_detections_as_the_official_detector():
    det = keynet.load_detector("default", num_points=500)
    sub = keynet.load_detector("default", num_points=500, subpixel=True)
    img = ROOT / "test_im" / "test_im.png"
    a, b = det.detect(img), sub.detect(img)
    assert len(a) == len(b) > 400
    assert np.array_equal(a[:, 2:], b[:, 2:])  # scales, scores, order
    # each point moves by less than its level's pixel (+ the official mapping's offset)
    d = np.linalg.norm(a[:, :2] - b[:, :2], axis=1)
    assert np.all(d <= 1.5 * a[:, 2] + 1.0) and d.mean() > 0.05


@pytest.mark.slow
def test_better_localised_on_a_real_pair(hseq_mini):
    """i_leuven 1 -> 2 (illumination change, known homography): repeated points land
    closer to each other with sub-pixel refinement."""
    det = keynet.load_detector("default", num_points=1000)
    sub = keynet.load_detector("default", num_points=1000, subpixel=True)
    H = np.loadtxt(hseq_mini / "i_leuven" / "H_1_2")
    errs = {}
    for name, d in (("official", det), ("subpixel", sub)):
        a, b = d.detect(hseq_mini / "i_leuven" / "1.ppm"), d.detect(hseq_mini / "i_leuven" / "2.ppm")
        p = np.column_stack([a[:, :2], np.ones(len(a))]) @ H.T
        dist, _ = cKDTree(b[:, :2]).query(p[:, :2] / p[:, 2:])
        errs[name] = dist[dist < 3].mean()
    assert errs["subpixel"] < 0.85 * errs["official"], errs
    assert subpixel_offsets(np.zeros((5, 5)), np.zeros((0, 2), int)).shape == (0, 2)


def test_the_deprecated_subpixel_class_is_the_setting():
    det = keynet.load_detector("default", num_points=300)
    with pytest.warns(DeprecationWarning, match="subpixel=True"):
        old = SubpixelKeyNetDetector.from_detector(det)
    assert old.settings.subpixel and old.engine is det.engine
    img = ROOT / "test_im" / "test_im.png"
    assert np.array_equal(old.detect(img), keynet.load_detector("default", num_points=300, subpixel=True).detect(img))
