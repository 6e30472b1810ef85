"""Pictures (keynet.base.viz): keypoints with their scale, matches coloured by inlier mask."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from keynet.commands import match_demo
from keynet.base import viz
from synthetic_scene import make_scene


def coloured(img, colour, tol=60):
    return np.all(np.abs(img.astype(int) - np.array(colour)) < tol, axis=-1)


def test_to_bgr_accepts_grey_float_and_16_bit():
    g = np.full((4, 5), 0.5)
    assert viz.to_bgr(g).shape == (4, 5, 3) and viz.to_bgr(g)[0, 0, 0] == 128
    assert viz.to_bgr(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255
    with pytest.raises(ValueError):
        viz.to_bgr(np.zeros((2, 2, 5), np.uint8))


def test_keypoint_circles_grow_with_the_scale():
    img = np.zeros((100, 200), np.uint8)
    small = viz.draw_keypoints(img, np.array([[50.0, 50.0, 2.0]]), radius_per_scale=5)
    big = viz.draw_keypoints(img, np.array([[50.0, 50.0, 6.0]]), radius_per_scale=5)
    ys, xs = np.nonzero(coloured(small, viz.YELLOW))
    assert abs(xs.max() - 50 - 10) <= 1 and abs(ys.min() - (50 - 10)) <= 1  # radius 2 * 5
    ys, xs = np.nonzero(coloured(big, viz.YELLOW))
    assert abs(xs.max() - 50 - 30) <= 1  # radius 6 * 5
    assert img.max() == 0  # the input is not drawn on
    only_first = viz.draw_keypoints(img, np.array([[20.0, 20, 1], [150.0, 80, 1]]), max_points=1)
    assert coloured(only_first, viz.YELLOW)[20, 20] and not coloured(only_first, viz.YELLOW)[75:85, 145:155].any()


def test_matches_side_by_side_inliers_green_outliers_red():
    a = np.zeros((60, 100), np.uint8)
    b = np.zeros((80, 120), np.uint8)
    xy0 = np.array([[10.0, 10.0], [10.0, 50.0]])
    xy1 = np.array([[90.0, 10.0], [90.0, 50.0]])
    out = viz.draw_matches(a, b, xy0, xy1, np.array([[0, 0], [1, 1]]), np.array([True, False]), gap=10)
    assert out.shape == (80, 100 + 10 + 120, 3)
    # the match of the first point goes from (10, 10) to (110 + 90, 10): green midway
    assert coloured(out, viz.GREEN)[10, 105]
    assert coloured(out, viz.RED)[50, 105] and not coloured(out, viz.GREEN)[50, 105]
    # the gap is white where no line crosses it
    assert (out[30, 100:110] == 255).all()
    with pytest.raises(ValueError, match="inliers has 1 entries"):
        viz.draw_matches(a, b, xy0, xy1, np.array([[0, 0], [1, 1]]), np.array([True]))


def test_max_lines_and_save(tmp_path):
    a = np.zeros((50, 50), np.uint8)
    xy = np.column_stack([np.full(10, 5.0), np.linspace(2, 47, 10)])
    out = viz.draw_matches(a, a, xy, xy, inliers=np.ones(10, bool), max_lines=2)
    rows = np.nonzero(coloured(out, viz.GREEN)[:, 52])[0]  # lines crossing the gap
    assert 0 < len(np.unique(rows // 5)) <= 2
    p = viz.save_image(tmp_path / "sub" / "m.png", out)
    assert p.is_file() and p.stat().st_size > 0
    with pytest.raises(OSError, match="cannot write image"):
        viz.save_image(tmp_path / "m.unknown-ext", out)
    assert viz.fit_width(np.zeros((100, 400, 3), np.uint8), 200).shape == (50, 200, 3)


@pytest.mark.slow
def test_match_demo_writes_the_picture(tmp_path, capsys):
    _, _, names = make_scene(tmp_path / "images", n_cams=3)
    a, b = (str(tmp_path / "images" / n) for n in names[:2])
    out = tmp_path / "m.png"
    rc = match_demo.main([a, b, "--out", str(out), "--num-points", "500", "--max-image-size", "0",
                          "--keypoints-out", str(tmp_path / "k.png")])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and (tmp_path / "k.png").is_file()
    pic = cv2.imread(str(out))
    assert pic.shape[1] == 320 + 8 + 320 and pic.shape[0] > 240  # a text banner above the pictures
    n_inl = int(text.split(" matches (")[1].split(", ")[1].split(" ")[0])
    assert n_inl > 50 and coloured(pic, viz.GREEN).sum() > coloured(pic, viz.RED).sum()
    assert match_demo.main([a, str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image not found" in err[0] and "missing.png" in err[0]
