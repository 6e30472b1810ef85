"""View synthesis (ASIFT / MODS, keynet.pipeline.views and the matching stages): the view
geometry, the back-mapping of keypoints and frames, the merging of duplicate matches, MODS's
iteration (``auto`` stops at the plain images when they suffice, goes further on a strong
tilt), the collection stages and the options. Small images, few points."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet.patches import patch_lafs
from keynet.commands import match as match_cmd
from keynet.commands import match_demo, options
from keynet.commands import reconstruct as reconstruct_cmd
from keynet.pipeline import hloc_io, matching
from keynet.pipeline import views as V
from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector
from keynet.pipeline.matching import FeatureConfig, MatcherConfig, MatchingError

ROOT = Path(__file__).resolve().parents[2]
TEST_IM = ROOT / "test_im" / "test_im.png"

pytestmark = pytest.mark.filterwarnings("ignore:.*pyramid level.*skipped")


def _frames_of(n, seed):
    g = np.random.default_rng(seed)
    a11 = np.exp(g.uniform(-0.8, 0.8, n))
    shapes = np.stack([np.stack([a11, np.zeros(n)], -1), np.stack([g.uniform(-1, 1, n), 1 / a11], -1)], -2)
    return shapes.astype(np.float32), g.uniform(0, 360, n).astype(np.float32)


# ----------------------------------------------------------------------------- the view set
def test_view_set_levels_counts_and_budgets():
    assert [len(V.views_of_level(k)) for k in range(V.NUM_LEVELS)] == [1, 5, 10]
    assert V.VIEWS[0].plain and [v.index for v in V.VIEWS] == list(range(16))
    lv1 = V.views_of_level(1)
    assert all(v.tilt == 2.0 for v in lv1) and np.allclose([v.phi for v in lv1], [0, 36, 72, 108, 144])
    lv2 = V.views_of_level(2)
    assert all(v.tilt == 4.0 for v in lv2) and np.allclose([v.phi for v in lv2], np.arange(0, 180, 18))
    for k in range(V.NUM_LEVELS):  # each level shares the plain image's keypoint budget
        assert math.isclose(sum(v.share for v in V.views_of_level(k)), 1.0)
    assert np.array_equal(V.view_levels(np.array([0, 1, 5, 6, 15])), [0, 1, 1, 2, 2])


@pytest.mark.parametrize("tilt,phi", [(2.0, 0.0), (2.0, 36.0), (4.0, 108.0), (4.0, 162.0)])
def test_a_point_of_the_image_lands_at_a_view_p(tilt, phi):
    """The centroid of a blob at p is at A_view p in the view (the warp and A_view agree),
    and the view holds the whole image."""
    h, w = 150, 220
    p = np.array([71.3, 94.6])
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 4.0 ** 2)).astype(np.float32)
    view = V.View(1, 1, tilt, phi, 1.0)
    out, a = V.synthesize(img, view)
    yv, xv = np.mgrid[0:out.shape[0], 0:out.shape[1]]
    wgt = out / out.sum()
    assert np.allclose([(xv * wgt).sum(), (yv * wgt).sum()], a @ np.r_[p, 1.0], atol=0.05)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float) @ a.T
    assert corners.min() >= -0.5 and np.all(corners.max(0) <= np.array(out.shape[::-1]) - 0.5)
    assert math.isclose(abs(np.linalg.det(a[:, :2])), 1 / tilt)


@pytest.mark.parametrize("scale", [0.5, 0.37])
def test_the_resized_image_for_views_maps_pixel_centres(scale):
    """The centroid of a blob at p lies at S p in the image resized for the views (OpenCV's
    area interpolation, pixel centres at x + 0.5), for a factor whose size rounds too; scale 1
    is the image itself."""
    h, w = 151, 223
    p = np.array([101.3, 64.6])
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)
    small, s = V.resized_for_views(img, scale)
    assert small.shape == (round(h * scale), round(w * scale))
    yv, xv = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    wgt = small / small.sum()
    assert np.allclose([(xv * wgt).sum(), (yv * wgt).sum()], (s @ np.r_[p, 1.0])[:2], atol=0.03)
    same, eye = V.resized_for_views(img, 1.0)
    assert np.array_equal(same, img) and np.array_equal(eye, np.eye(3))


def test_keypoints_of_views_of_the_half_size_image_land_on_the_image_structures(detector_only):
    """Views synthesised from the half-size image (the cascade's budget): their keypoints,
    mapped back through the view and the resize, land on the blobs of the full image, at twice
    the scale of the same structures' detections in the full image's unturned view."""
    img, pts = _blobs(size=320, sigma=3.0)
    half = V.ViewBudget(1.0, 0, 0.5)
    for view in (V.View(1, 1, 2.0, 0.0, 1.0), V.View(2, 1, 2.0, 36.0, 1.0)):
        f, idx = V.view_features(detector_only, img, [view], budget=half)
        assert len(f.keypoints) >= 15 and np.all(idx == view.index)
        assert np.mean(_nearest(f.keypoints, pts) < 3.0) > 0.9, view  # Key.Net is ~2 px off these blobs at any scale
        full, _ = V.view_features(detector_only, img, [view], budget=V.ViewBudget(1.0, 0, 1.0))
        assert np.median(f.keypoints[:, 2]) > 1.5 * np.median(full.keypoints[:, 2])


# ----------------------------------------------------------------------------- frames
def test_decompose_frames_is_the_inverse_of_compose():
    shapes, ori = _frames_of(200, 0)
    u, theta = V.decompose_frames(V.compose_frames(shapes, ori, 200))
    assert np.allclose(u, shapes, atol=1e-5)
    assert np.allclose(np.mod(theta - ori + 180, 360) - 180, 0, atol=1e-3)
    # any frame of positive determinant: the shape is the convention's, the product gives it back
    m = np.random.default_rng(1).normal(size=(300, 2, 2))
    m[np.linalg.det(m) < 0] *= np.array([[-1.0, 1.0]])
    u, theta = V.decompose_frames(m)
    assert np.allclose(u[:, 0, 1], 0) and np.all(u[:, 0, 0] > 0) and np.all(u[:, 1, 1] > 0)
    assert np.allclose(np.linalg.det(u), 1, atol=1e-4)
    assert np.allclose(V.compose_frames(u, theta, 300), m / np.sqrt(np.linalg.det(m))[:, None, None], atol=1e-4)
    assert np.all((theta >= 0) & (theta < 360))


@pytest.mark.parametrize("upright", [True, False])
def test_map_back_is_the_inverse_affine_on_positions_scales_and_whole_frames(upright):
    """Hand-made view keypoints: positions by A^-1, scales by sqrt(det A^-1), and the whole
    kornia frame of each mapped-back keypoint is A^-1 applied to its frame in the view."""
    n = 40
    g = np.random.default_rng(2)
    kv = np.column_stack([g.uniform(0, 100, n), g.uniform(0, 200, n), g.uniform(0.7, 3, n), g.uniform(0, 1, n)])
    shapes, ori = (None, None) if upright else _frames_of(n, 3)
    a = V.view_affine((150, 220), 4.0, 126.0)[0]
    k, u, theta = V.map_back(kv, a, shapes, ori)
    b = np.linalg.inv(np.vstack([a, [0, 0, 1]]))
    assert np.allclose(k[:, :2], kv[:, :2] @ b[:2, :2].T + b[:2, 2])
    assert np.allclose(k[:, 2], kv[:, 2] * math.sqrt(abs(np.linalg.det(b[:2, :2]))))
    assert np.allclose(k[:, 2], kv[:, 2] * 2.0) and np.array_equal(k[:, 3], kv[:, 3])  # det A = 1/4
    f = lambda kp, s, o: patch_lafs(torch.from_numpy(kp[:, :3]).float(),  # noqa: E731
                                    None if o is None else torch.deg2rad(torch.from_numpy(np.asarray(o))),
                                    shapes=None if s is None else torch.from_numpy(np.asarray(s)))[0].numpy()
    in_view, back = f(kv, shapes, ori), f(k, u, theta)
    assert np.allclose(back[:, :, :2], b[:2, :2][None] @ in_view[:, :, :2], rtol=1e-4, atol=1e-3)
    assert np.allclose(back[:, :, 2], k[:, :2], atol=1e-4)


def _blobs(size=256, sigma=1.5, seed=0):
    """Bright Gaussian blobs on a grid (jittered), 40 px apart: one distinct structure each."""
    g = np.random.default_rng(seed)
    c = np.arange(28, size - 27, 40, dtype=np.float64)
    pts = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2) + g.uniform(-5, 5, (len(c) ** 2, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size), 60.0)
    for x, y in pts:
        img += 150 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma))
    return np.clip(img, 0, 255).astype(np.uint8), pts


@pytest.fixture(scope="module")
def detector_only():
    return Extractor(load_detector("default", num_points=25, subpixel=True))


def _nearest(a, b):
    return np.linalg.norm(np.asarray(a)[:, None, :2] - np.asarray(b)[None, :, :2], axis=2).min(1)


@pytest.mark.slow
def test_keypoints_of_a_view_land_on_the_structures_of_the_image(detector_only):
    """Detect on the blob pattern and on its views, map the views' keypoints back: they land
    on the blobs the image's own detections mark (Key.Net places its maxima ~1.3 px off a
    blob's centre in a fixed image direction, which turns with the view: so the comparison is
    with the blobs, and with the image's detections directly for the unturned tilt), and
    reading the view's coordinates without the inverse affine would not."""
    img, pts = _blobs()
    f0 = detector_only.features(img)
    assert len(f0.keypoints) >= 20 and np.mean(_nearest(f0.keypoints, pts) < 2.0) > 0.9
    for view in (V.View(1, 1, 2.0, 0.0, 1.0), V.View(2, 1, 2.0, 36.0, 1.0), V.View(3, 1, 2.0, 108.0, 1.0)):
        f, idx = V.view_features(detector_only, img, [view])
        assert len(f.keypoints) >= 15 and np.all(idx == view.index)
        assert np.mean(_nearest(f.keypoints, pts) < 2.0) > 0.9, view
        raw = detector_only.features(V.synthesize(img, view)[0]).keypoints  # not mapped back
        assert np.mean(_nearest(raw, pts) < 2.0) < 0.5, view
        inside = (f.keypoints[:, :2] >= 0).all(1) & (f.keypoints[:, 0] <= 255) & (f.keypoints[:, 1] <= 255)
        assert inside.all()
    f, _ = V.view_features(detector_only, img, [V.View(1, 1, 2.0, 0.0, 1.0)])
    assert np.mean(_nearest(f.keypoints, f0.keypoints) < 2.0) > 0.5  # the image's own detections
    f, _ = V.view_features(detector_only, img, [V.View(4, 2, 4.0, 54.0, 1.0)])
    assert np.mean(_nearest(f.keypoints, pts) < 2.0) > 0.6


def test_the_plain_view_is_the_image_features(detector_only):
    img, _ = _blobs()
    plain = detector_only.features(img)
    f, idx = V.view_features(detector_only, img, V.views_of_level(0))
    assert np.array_equal(f.keypoints, plain.keypoints) and np.all(idx == 0)
    assert np.allclose(f.shapes, np.eye(2)) and np.all(f.orientations == 0)
    assert detector_only.detector.settings.num_points == 25  # the budget of a view is restored


# ----------------------------------------------------------------------------- duplicates
def test_dedup_merges_the_same_correspondence_found_in_several_views():
    xy0 = np.array([[10, 10], [11, 10.5], [10.5, 11.8], [30, 30], [30.5, 30], [50, 50], [53, 50], [70, 70]], float)
    xy1 = np.array([[5, 5], [5.5, 6], [6, 4.5], [40, 40], [60, 60], [8, 8], [8, 8], [1, 1]], float)
    scores = np.array([0.7, 0.9, 0.8, 0.9, 0.8, 0.9, 0.8, 0.5])
    keep = V.dedup_matches(xy0, xy1, scores)
    # 0-2: one correspondence, the best (1) kept; 3/4: close in image 0 only; 5/6: 3 px apart in image 0
    assert keep.tolist() == [False, True, False, True, True, True, True, True]
    assert V.dedup_matches(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)).shape == (0,)


# ----------------------------------------------------------------------------- configuration
def test_matcher_config_and_fingerprints():
    assert MatcherConfig().view_synthesis == "none" and MatcherConfig().min_inliers == 15
    with pytest.raises(ValueError, match="view synthesis"):
        MatcherConfig(view_synthesis="some")
    with pytest.raises(ValueError, match="min_inliers"):
        MatcherConfig(min_inliers=0)
    cfg = FeatureConfig()
    plain = json.loads(matching.features_fingerprint(cfg))
    auto, full = matching.features_fingerprint(cfg, "auto"), matching.features_fingerprint(cfg, "full")
    # the views' files differ from the plain one by the view set only, and auto = full (one union)
    assert "views" not in plain and auto == full and json.loads(auto)["views"] == V.VIEW_SET_ID
    assert {k: v for k, v in json.loads(auto).items() if k != "views"} == plain
    # a feature setting reaches the fingerprint, with views or without
    other = FeatureConfig(num_points=cfg.num_points + 1)
    assert json.loads(matching.features_fingerprint(other)) != plain
    assert matching.features_fingerprint(other, "auto") != auto


def _fake_features(path, n=60, views=False, seed=0):
    g = np.random.default_rng(seed)
    d = g.normal(size=(n, 128)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = np.column_stack([g.uniform(0, 200, (n, 2)), np.ones(n), np.ones(n)])
    with hloc_io.open_h5(path, "a") as fd:
        fd.attrs["extractor"] = "fake"
        for name in ("a.png", "b.png"):
            hloc_io.write_features(fd, name, k, d, (200, 200), lafs=patch_lafs(torch.from_numpy(k[:, :3]).float())[0]
                                   .numpy() if views else None)
            if views:
                fd[name].create_dataset("views", data=np.zeros(n, np.int16))


def test_the_matches_cache_fingerprint_is_unchanged_without_view_synthesis(tmp_path):
    _fake_features(tmp_path / "f.h5")
    matching.match_pairs([("a.png", "b.png")], tmp_path / "f.h5", tmp_path / "m.h5", progress=False)
    with hloc_io.open_h5(tmp_path / "m.h5", "r") as fm:
        assert json.loads(fm.attrs["matcher"]) == {"matcher": "smnn", "threshold": 0.9, "features": "fake"}
        m, _ = hloc_io.read_matches(fm, "a.png", "b.png")
    assert len(m) == 60 and np.all(m[:, 0] == m[:, 1])
    with pytest.raises(MatchingError, match="without view synthesis"):
        matching.match_pairs([("a.png", "b.png")], tmp_path / "f.h5", tmp_path / "m2.h5",
                             MatcherConfig(view_synthesis="auto"), progress=False)
    _fake_features(tmp_path / "v.h5", views=True)
    matching.match_pairs([("a.png", "b.png")], tmp_path / "v.h5", tmp_path / "m3.h5",
                         MatcherConfig(view_synthesis="auto"), progress=False)
    with hloc_io.open_h5(tmp_path / "m3.h5", "r") as fm:
        fp = json.loads(fm.attrs["matcher"])
        assert fp["views"] == "auto" and fp["min_inliers"] == 15
        m, _ = hloc_io.read_matches(fm, "a.png", "b.png")
    assert len(m) >= 50 and np.all(m[:, 0] == m[:, 1])  # the same points: all verified


def test_options_parse_and_a_bad_value_is_one_error_line(capsys):
    for build, req in ((match_cmd.build_parser, ["--image-dir", "i", "--out", "o"]),
                       (reconstruct_cmd.build_parser, ["--image-dir", "i", "--out", "o"]),
                       (match_demo.build_parser, ["a.png", "b.png"])):
        a = build().parse_args(req)
        assert (a.view_synthesis, a.min_inliers) == ("none", 15)
        a = build().parse_args(["--view-synthesis", "auto", "--min-inliers", "30", *req])
        cfg = options.matcher_config_from_args(a)
        assert (cfg.view_synthesis, cfg.min_inliers) == ("auto", 30)
        for bad in (["--view-synthesis", "more"], ["--min-inliers", "0"], ["--min-inliers", "x"]):
            with pytest.raises(SystemExit) as e:
                build().parse_args([*bad, *req])
            assert e.value.code == 2
            err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
            assert len(err) == 1 and bad[0] in err[0]


# ----------------------------------------------------------------------------- matching
@pytest.fixture(scope="module")
def extractor():
    return Extractor(load_detector("default", num_points=200, subpixel=True), load_descriptor("default"))


@pytest.mark.slow
def test_none_is_todays_match_images_and_auto_stops_at_the_plain_images(extractor):
    cfg = FeatureConfig(num_points=200, max_image_size=0)
    today = matching.match_images(TEST_IM, TEST_IM, extractor, cfg)
    none = matching.match_images(TEST_IM, TEST_IM, extractor, cfg, MatcherConfig(), view_synthesis="none")
    assert today.keys() == none.keys() == {"kpts0", "kpts1", "matches", "scores", "size0", "size1"}
    assert all(np.array_equal(today[k], none[k]) for k in today)
    auto = matching.match_images(TEST_IM, TEST_IM, extractor, cfg, view_synthesis="auto")
    assert auto["levels_used"] == 0 and auto["inliers"].sum() >= 15
    assert np.all(auto["views0"] == 0) and np.array_equal(auto["kpts0"], today["kpts0"])
    assert auto["lafs0"].shape == (len(auto["kpts0"]), 2, 3) and auto["inliers"].shape == (len(auto["matches"]),)
    # the same correspondences, merged where Key.Net found one point at several pyramid levels
    tm = today["matches"]
    distinct = V.dedup_matches(today["kpts0"][tm[:, 0], :2], today["kpts1"][tm[:, 1], :2], today["scores"]).sum()
    assert np.all(auto["matches"][:, 0] == auto["matches"][:, 1]) and len(auto["matches"]) >= 0.9 * distinct
    # the matcher's own setting is used when the keyword is not given
    via_cfg = matching.match_images(TEST_IM, TEST_IM, extractor, cfg, MatcherConfig(view_synthesis="auto"))
    assert via_cfg["levels_used"] == 0 and np.array_equal(via_cfg["matches"], auto["matches"])


@pytest.mark.slow
def test_auto_adds_views_on_a_strongly_tilted_pair(tilted_pair):
    """An HPatches image against itself tilted by 5: the plain images find (almost) nothing,
    each level of views more verified matches, most of them right; ``auto`` goes on to the
    level where they reach 15; the collection stages do the same from features.h5."""
    tmp_path, a = tilted_pair
    tilted = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_GRAYSCALE)
    ex = Extractor(load_detector("default", num_points=300, subpixel=True), load_descriptor("default"))
    cfg = FeatureConfig(num_points=300, max_image_size=0)
    s = matching.extract_features(tmp_path, ["a.png", "b.png"], tmp_path / "f.h5", cfg, extractor=ex,
                                  progress=False, view_synthesis="auto")
    assert s.done == ["a.png", "b.png"]
    feats = {}
    with hloc_io.open_h5(tmp_path / "f.h5", "r") as fd:
        assert fd.attrs["extractor"] == matching.features_fingerprint(cfg, "auto")
        for n in ("a.png", "b.png"):
            feats[n] = hloc_io.read_features(fd, n)
            feats[n]["views"] = fd[n]["views"][()]
            assert "orientations" not in feats[n]  # upright features: the frames are in lafs
    for f in feats.values():
        assert np.all(np.diff(V.view_levels(f["views"])) >= 0) and set(V.view_levels(f["views"])) == {0, 1, 2}
        assert f["lafs"].shape == (len(f["keypoints"]), 2, 3)
    counts, correct = [], []
    fa, fb = feats["a.png"], feats["b.png"]
    for level in range(V.NUM_LEVELS):
        na = int(np.sum(V.view_levels(fa["views"]) <= level))
        nb = int(np.sum(V.view_levels(fb["views"]) <= level))
        ka = np.column_stack([fa["keypoints"], fa["scales"]])[:na]
        kb = np.column_stack([fb["keypoints"], fb["scales"]])[:nb]
        m, sc = matching.match_union(ka, fa["descriptors"][:na], fa["lafs"][:na], kb, fb["descriptors"][:nb],
                                     fb["lafs"][:nb], (320, 400), tilted.shape)
        m, sc, inl = matching.verify_matches(ka, kb, m, sc)
        err = np.linalg.norm(np.column_stack([ka[m[inl, 0], :2], np.ones(inl.sum())]) @ a.T - kb[m[inl, 1], :2], axis=1)
        counts.append(int(inl.sum()))
        correct.append(int((err < 3).sum()))
    assert counts[0] < 15 <= counts[2] and counts[0] < counts[1] < counts[2], counts
    assert correct[2] >= 0.7 * counts[2], (counts, correct)
    # the collection stage: auto stops at the first level with 15 verified matches
    first = next(k for k, c in enumerate(counts) if c >= 15)
    matching.match_pairs([("a.png", "b.png")], tmp_path / "f.h5", tmp_path / "m.h5",
                         MatcherConfig(view_synthesis="auto"), progress=False)
    m, _ = hloc_io.read_matches(tmp_path / "m.h5", "a.png", "b.png")
    assert len(m) == counts[first]
    # a features file without views is not reused for view synthesis (and vice versa)
    s = matching.extract_features(tmp_path, ["a.png"], tmp_path / "f.h5", cfg, extractor=ex, progress=False,
                                  view_synthesis="full")
    assert s.reused == ["a.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = matching.extract_features(tmp_path, ["a.png"], tmp_path / "f.h5", cfg, extractor=ex, progress=False)
    assert s.done == ["a.png"]
    with hloc_io.open_h5(tmp_path / "f.h5", "r") as fd:
        assert "views" not in fd["a.png"] and fd.attrs["extractor"] == cfg.fingerprint()
