"""Weak two-view fits (keynet.base.twoview.fit_quality) and how ``keynet demo`` and ``keynet
match`` say so: the rule on synthetic correspondences (a sound 3D pair, too few inliers,
inliers in one small patch, a plane, a pure rotation), then each command on rendered pictures."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from keynet.base import twoview
from keynet.commands import match as match_cli
from keynet.commands import match_demo
from synthetic_scene import make_scene, texture

W, H = 640, 480
K = np.array([[500.0, 0, W / 2], [0, 500.0, H / 2], [0, 0, 1]])


def project(X: np.ndarray, R: np.ndarray, C: np.ndarray, noise: float, rng) -> np.ndarray:
    x = (X - C) @ R.T @ K.T
    return x[:, :2] / x[:, 2:] + rng.normal(0, noise, (len(X), 2))


def rot_y(deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, np.deg2rad(deg), 0.0]))[0]


def pair(X: np.ndarray, C1=(1.0, 0, 0), deg=-8.0, noise=0.3, seed=0):
    """Projections of ``X`` into a camera at the origin and one at ``C1`` turned by ``deg``."""
    rng = np.random.default_rng(seed)
    return project(X, np.eye(3), np.zeros(3), noise, rng), project(X, rot_y(deg), np.array(C1), noise, rng)


def scene_points(n: int, seed: int = 0, spread=(1.0, 1.0), depth=(4.0, 12.0)) -> np.ndarray:
    """``n`` points seen by the first camera over the whole image (``spread`` = 1) at depths in ``depth``."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(*depth, n)
    u = rng.uniform(-spread[0], spread[0], n) * (W / 2 - 10) / K[0, 0]
    v = rng.uniform(-spread[1], spread[1], n) * (H / 2 - 10) / K[1, 1]
    return np.column_stack([u * z, v * z, z])


def judge(xy0, xy1, model="fundamental"):
    fit = (twoview.estimate_fundamental(xy0, xy1) if model == "fundamental"
           else twoview.estimate_homography(xy0, xy1, threshold=3.0))
    return twoview.fit_quality(xy0, xy1, fit, (W, H), (W, H), model, 1.0 if model == "fundamental" else 3.0)


def test_sound_3d_pair_is_not_weak():
    q = judge(*pair(scene_points(300)))
    assert not q.weak and q.num_inliers > 250 and min(q.coverage) > 0.5 and q.homography_share < 0.9, q


def test_few_inliers():
    q = judge(*pair(scene_points(twoview.MIN_INLIERS - 1)))
    assert q.weak and q.problems == [f"only {twoview.MIN_INLIERS - 1} inliers (fewer than 15)"]
    assert not judge(*pair(scene_points(2 * twoview.MIN_INLIERS))).weak  # enough of the same kind


def test_inliers_in_a_small_patch():
    """300 points within a 0.2 x 0.2 part of image 0 (4% of it), at varied depths (not planar)."""
    q = judge(*pair(scene_points(300, spread=(0.2, 0.2), depth=(3.0, 30.0))))
    assert q.weak and len(q.problems) == 1 and "within" in q.problems[0] and min(q.coverage) < 0.1, q
    assert twoview.weak_fit_hint(q) == twoview.WIDE_BASELINE_HINT
    q = judge(*pair(scene_points(300, spread=(0.45, 0.45), depth=(3.0, 30.0))))  # about 20% of the image
    assert not q.weak, q


@pytest.mark.parametrize("case", ["plane", "rotation"])
def test_plane_or_pure_rotation_is_degenerate(case):
    if case == "plane":  # every point at depth 6: one plane
        xy = pair(scene_points(300, depth=(6.0, 6.0)))
    else:  # 3D points, the camera turned on the spot
        xy = pair(scene_points(300), C1=(0.0, 0, 0), deg=-15.0)
    q = judge(*xy)
    assert q.degenerate and q.problems == [f"a homography explains {100 * q.homography_share:.0f}% of the inliers"]
    assert twoview.weak_fit_hint(q) == twoview.PLANAR_HINT
    assert "--model homography" in match_demo.weak_fit_line(q)
    assert not judge(*xy, model="homography").weak  # the right model for it


# ----------------------------------------------------------------------------- the commands
def write_plane_pair(folder):
    """Two pictures of one textured plane (a homography apart): 320 x 240."""
    folder.mkdir(parents=True, exist_ok=True)
    tex = texture(np.random.default_rng(3), 512)[:240, :320].astype(np.uint8)
    Hm = np.array([[0.95, 0.08, 12.0], [-0.05, 1.0, 6.0], [1e-4, 0.0, 1.0]])
    cv2.imwrite(str(folder / "a.png"), tex)
    cv2.imwrite(str(folder / "b.png"), cv2.warpPerspective(tex, Hm, (320, 240), borderMode=cv2.BORDER_REFLECT))
    return str(folder / "a.png"), str(folder / "b.png")


@pytest.mark.slow
def test_demo_says_when_a_fit_is_weak(tmp_path, capsys):
    """A plane with --model fundamental: the one warning line on stderr, the hint to fit a
    homography; with --model homography, or on the 3D synthetic scene, no warning."""
    a, b = write_plane_pair(tmp_path / "plane")
    common = ["--num-points", "500", "--max-image-size", "0", "--no-progress", "--out", str(tmp_path / "m.png")]
    assert match_demo.main([a, b] + common) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: weak fit: a homography explains") and "--model homography" in err[0]
    assert match_demo.main([a, b, "--model", "homography"] + common) == 0
    assert capsys.readouterr().err == ""
    _, _, names = make_scene(tmp_path / "scene", n_cams=2)
    assert match_demo.main([str(tmp_path / "scene" / n) for n in names] + common) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_match_counts_weak_fits(tmp_path, capsys):
    """``keynet match`` on a plane pair: one warning line counting the weak fit and its reason;
    on the 3D scene none; --check-fits false: no check."""
    write_plane_pair(tmp_path / "plane")
    common = ["--num-points", "500", "--max-image-size", "0", "--progress", "false"]
    assert match_cli.main(["--image-dir", str(tmp_path / "plane"), "--out", str(tmp_path / "o1")] + common) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: weak fits in 1 of 1 pairs (0 with fewer than 15 inliers, 0 with inliers within 10% of an "
                   "image, 1 explained by a homography); a plane or a pure rotation: a homography relates them, no "
                   "baseline for a reconstruction"]
    assert match_cli.main(["--image-dir", str(tmp_path / "plane"), "--out", str(tmp_path / "o1"),
                           "--check-fits", "false"] + common) == 0
    assert capsys.readouterr().err == ""
    # cameras 1-3 of four: camera 0 sees the back wall nearly square on, and 82-91% of its
    # matches with any shipped HardNet fit one homography, at the check's 90% (the others: 38-74%)
    make_scene(tmp_path / "scene", n_cams=4)
    (tmp_path / "scene" / "0000.png").unlink()
    assert match_cli.main(["--image-dir", str(tmp_path / "scene"), "--out", str(tmp_path / "o2")] + common) == 0
    assert capsys.readouterr().err == ""
    counts = match_cli.weak_fits(tmp_path / "o2" / "features.h5", tmp_path / "o2" / "matches.h5",
                                 [("0001.png", "0002.png"), ("0001.png", "0003.png")])
    assert counts["pairs"] == 2 and counts["weak"] == 0
    few = {"pairs": 4, "weak": 2, "few": 1, "small": 1, "planar": 0}
    assert match_cli.weak_fits_line(few).endswith(twoview.WIDE_BASELINE_HINT)
