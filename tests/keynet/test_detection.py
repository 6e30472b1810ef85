"""Detection logic on synthetic score maps: NMS, top-N selection, quotas, pyramid mapping."""
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter
from torch import nn

from keynet.detection import (DetectorSettings, ImageTooSmallError, KeyNetDetector, build_pyramid, level_quotas,
                              nms, nms_top_points, select_points)
from keynet.base.geometry import remove_border


@pytest.mark.parametrize("size", [3, 4, 15])
def test_nms_equals_scipy_maximum_filter(size):
    rng = np.random.default_rng(size)
    s = rng.random((60, 75)).astype(np.float32)
    s[rng.random(s.shape) < 0.3] = 0
    s[10, 10:13] = 2.0  # a plateau: all its pixels survive, as in the original
    ref = s * (s == maximum_filter(s, footprint=np.ones((size, size))))
    np.testing.assert_array_equal(nms(s, size), ref)
    t = torch.from_numpy(s)[None, None]
    np.testing.assert_array_equal(nms(t, size)[0, 0].numpy(), ref)


def test_remove_border_arrays_and_tensors():
    s = np.ones((20, 30))
    r = remove_border(s, 4)
    assert r[4:-4, 4:-4].all() and r.sum() == (12 * 22) and s.all()
    t = remove_border(torch.ones(2, 1, 20, 30), 4)
    assert t.sum() == 2 * 12 * 22 and t[0, 0, 4:-4, 4:-4].all()
    assert remove_border(np.ones((5, 5), bool), 3).sum() == 0


def test_nms_top_points_is_nms_mask_then_selection():
    rng = np.random.default_rng(0)
    s = rng.random((40, 50)).astype(np.float32)
    mask = np.zeros_like(s)
    mask[5:30, 10:45] = 1
    rc, vals = nms_top_points(s, 5, 12, mask)
    ref = select_points(nms(s, 5) * mask, 12)
    np.testing.assert_array_equal(rc, ref)
    np.testing.assert_array_equal(vals, s[ref[:, 0], ref[:, 1]])
    assert mask[rc[:, 0], rc[:, 1]].all()


def _select_reference(score, n):
    """The original's find_index_higher_scores, written plainly."""
    order = np.flip(np.sort(score.flatten()))
    thr = order[n - 1]
    if thr <= 0:
        pos = np.argwhere(order > 0)
        thr = 0.0 if len(pos) == 0 else order[pos[-1]][0]
    return np.argwhere(score >= thr)[:n]


@pytest.mark.parametrize("n", [1, 7, 50, 400])
def test_select_points_matches_original_rule(n):
    rng = np.random.default_rng(n)
    s = np.round(rng.random((30, 40)), 2)  # many ties
    s[rng.random(s.shape) < 0.8] = 0  # fewer positives than some n
    np.testing.assert_array_equal(select_points(s, n), _select_reference(s, n))
    assert len(select_points(s, 0)) == 0
    assert len(select_points(np.zeros((5, 5)), 3)) == 3  # the original keeps zeros when nothing is positive
    signed = s - 0.3  # maps with negative values take the general path
    np.testing.assert_array_equal(select_points(signed, n), _select_reference(signed, n))


def test_level_quotas():
    q = level_quotas(1500, 7, 1, math.sqrt(2))
    assert q == [int(1500 * 2.0 ** -(i - 1) / sum(2.0 ** -(j - 1) for j in range(7))) for i in range(7)]
    assert sum(q) <= 1500 and q[0] > q[1] > q[-1]
    assert level_quotas(1000, 1, 0, 2.0) == [1000]


def test_pyramid_layout():
    img = np.random.default_rng(0).random((200, 300))
    lv = build_pyramid(img, DetectorSettings(pyramid_levels=3, upsampled_levels=1))
    assert [l.image.shape for l in lv] == [(283, 424), (200, 300), (142, 213), (101, 151), (72, 107)]
    assert np.allclose([l.scale for l in lv], [2**-0.5, 1, 2**0.5, 2, 2**1.5])
    assert len(build_pyramid(img, DetectorSettings(multi_scale=False))) == 1


class _BlobNet(nn.Module):
    """Stands in for Key.Net: the response is the image itself (a bright blob is a peak)."""

    def min_input_size(self):
        return 8

    def forward(self, x):
        return x


@pytest.mark.parametrize("xy", [(123.0, 77.0), (250.0, 150.0), (60.0, 190.0)])
def test_points_map_back_to_input_pixels(xy):
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    # a faint ramp instead of a flat background: the original's raster-order tie breaking
    # would otherwise fill a level's quota with equal background pixels
    img = np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * 6.0**2)) + 1e-3 * (xx + 2 * yy) / (w + 2 * h)
    det = KeyNetDetector(_BlobNet(), DetectorSettings(num_points=60, pyramid_levels=3, upsampled_levels=1,
                                                      nms_size=15, border_size=5), device="cpu")
    kp = det.detect(img)
    for s in np.unique(np.round(kp[:, 2], 4)):
        best = kp[np.round(kp[:, 2], 4) == s][0]  # the strongest point of that level
        # a level of scale s locates the peak to within one of its pixels once mapped back
        # (the official mapping x_level * s ignores scikit-image's half-pixel convention and
        # the ceil-rounded level sizes, a bias of up to ~s/2 that we keep for parity)
        assert abs(best[0] - xy[0]) <= s + 1e-6 and abs(best[1] - xy[1]) <= s + 1e-6, (s, best)
    assert np.all(np.diff(kp[:, 3]) <= 0)
    assert kp.shape[1] == 4 and len(kp) <= 60


def test_detector_bad_inputs():
    det = KeyNetDetector(_BlobNet(), device="cpu")
    with pytest.raises(Exception, match="all black"):
        det.detect(np.zeros((50, 50)))
    with pytest.raises(Exception, match="NaN"):
        det.detect(np.full((50, 50), np.nan))
    with pytest.raises(ImageTooSmallError, match="smaller than"):
        det.detect(np.ones((5, 50)))


@pytest.mark.parametrize("turns", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_rotation_average_makes_detection_equivariant_to_right_angles(turns):
    """With ``rotation_average`` the score maps are averaged over evenly spaced turns (the
    right angles, and with 8 turns also the 45-degree ones): the keypoints of the image turned
    by 90 degrees are the turned keypoints (single scale, where the level is the image
    itself); without it, far fewer are."""
    import cv2 as _cv2
    from pathlib import Path as _Path

    from keynet import load_detector

    img = _cv2.imread(str(_Path(__file__).resolve().parents[2] / "test_im" / "test_im.png"),
                      _cv2.IMREAD_GRAYSCALE)[60:380, 40:440].astype(np.float32)
    h, w = img.shape

    def shared(rotation_average: bool) -> float:
        det = load_detector("default", num_points=300, multi_scale=False, device="cpu",
                            rotation_average=rotation_average, rotation_average_turns=turns)
        a = det.detect(img)
        b = det.detect(np.ascontiguousarray(np.rot90(img)))
        # np.rot90: (x, y) -> (y, w - 1 - x)
        mapped = np.stack([a[:, 1], w - 1 - a[:, 0]], 1)
        d = np.abs(mapped[:, None, :] - b[None, :, :2]).sum(-1).min(1)
        return float(np.mean(d < 1e-6))

    assert shared(True) > 0.98
    assert shared(False) < shared(True) - 0.1


@pytest.mark.slow
def test_eight_turn_rotation_average_follows_a_45_degree_turn():
    """The 45-degree turns of ``rotation_average_turns=8`` make the detection follow an image
    turned by 45 degrees (bilinearly, on an expanded canvas) far better than the right angles
    alone: the share of keypoints found again within 1 px rises from about 0.3 to 0.65."""
    import cv2 as _cv2
    from pathlib import Path as _Path

    from keynet import load_detector
    from HSequences_bench.rotation import rotate_image

    img = _cv2.imread(str(_Path(__file__).resolve().parents[2] / "test_im" / "test_im.png"),
                      _cv2.IMREAD_GRAYSCALE)[60:380, 40:440].astype(np.float32)
    turned, h_rot = rotate_image(img, 45.0)

    def found_again(turns: int) -> float:
        det = load_detector("default", num_points=300, multi_scale=False, device="cpu", subpixel=True,
                            rotation_average=True, rotation_average_turns=turns)
        a, b = det.detect(img), det.detect(turned)
        m = np.c_[a[:, :2], np.ones(len(a))] @ h_rot.T
        d = np.linalg.norm(m[:, None, :2] / m[:, None, 2:] - b[None, :, :2], axis=-1).min(1)
        return float(np.mean(d < 1.0))

    four, eight = found_again(4), found_again(8)
    assert eight > 0.55 and eight > four + 0.2, (four, eight)


def test_rotation_average_turns_must_be_a_multiple_of_four():
    for bad in (0, 2, 6):
        with pytest.raises(ValueError, match="multiple of 4"):
            DetectorSettings(rotation_average_turns=bad)


def test_skipped_levels_warn_with_their_own_category():
    """A pyramid level below the network's input size is skipped with a SkippedLevelsWarning
    (a UserWarning the commands can ignore without hiding any other warning)."""
    import warnings

    from keynet.detection import SkippedLevelsWarning

    class _Large(_BlobNet):
        def min_input_size(self):
            return 40

    img = np.zeros((60, 80))
    img[25:35, 35:45] = 1.0
    det = KeyNetDetector(_Large(), DetectorSettings(num_points=10, pyramid_levels=3, upsampled_levels=0,
                                                    nms_size=5, border_size=2), device="cpu")
    with pytest.warns(SkippedLevelsWarning, match=r"pyramid level\(s\) smaller than 40 px skipped"):
        det.detect(img)
    assert issubclass(SkippedLevelsWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SkippedLevelsWarning)
        assert len(det.detect(img)) > 0
