"""The wide-baseline cascade (keynet.pipeline.cascade): the geometry rule on correspondences
with known geometry, the plain pipeline's answer whenever its geometry passes or nothing
passes, views on a strongly tilted pair, the view budgets, the stages and the options."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from HSequences_bench.harness.method_base import MethodError
from HSequences_bench.harness.wide_baseline_methods import MethodOptions, build_method
from keynet.pipeline import cascade as C
from keynet.pipeline import hloc_io, matching
from keynet.pipeline import views as V
from keynet.pipeline.config import MatcherConfig, VIEW_SYNTHESIS_MODES, FeatureConfig
from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector

ROOT = Path(__file__).resolve().parents[3]
TEST_IM = ROOT / "test_im" / "test_im.png"

pytestmark = pytest.mark.filterwarnings("ignore:.*pyramid level.*skipped")


# ----------------------------------------------------------------------------- the rule
def _two_views(n, seed=0, spread=1.0):
    """Correspondences of ``n`` random 3-D points seen by two cameras 20 degrees apart
    (640 x 480 images, f = 500); ``spread`` < 1 puts the points in a small part of the view."""
    g = np.random.default_rng(seed)
    X = np.column_stack([g.uniform(-2, 2, n) * spread, g.uniform(-1.5, 1.5, n) * spread, g.uniform(6, 10, n)])
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    a = math.radians(20)
    R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    t = np.array([-2.5, 0.2, 0.5])
    p0 = (X @ K.T)
    p1 = ((X @ R.T + t) @ K.T)
    return p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:]


SIZE = (640, 480)


def test_a_true_geometry_passes_the_rule():
    xy0, xy1 = _two_views(200)
    g = np.random.default_rng(1)
    out0, out1 = g.uniform(0, 640, (100, 2)), g.uniform(0, 480, (100, 2))  # a third wrong
    inl, check = C.check_geometry(np.vstack([xy0, out0]), np.vstack([xy1, out1]), SIZE, SIZE, 15)
    assert check.passed, check
    assert inl[:200].mean() > 0.95 and inl[200:].mean() < 0.2
    assert check.inliers >= C.CHANCE_FACTOR * check.chance and check.tentative == 300


def test_chance_correspondences_reach_the_count_but_fail_the_chance_test():
    """Thousands of random matches: a 2 px epipolar band holds more than 15 of them, so the
    count alone would pass; the shuffled matches hold as many, so the rule does not."""
    g = np.random.default_rng(3)
    xy0 = g.uniform(0, 640, (3000, 2))
    xy1 = g.uniform(0, 480, (3000, 2))
    _, check = C.check_geometry(xy0, xy1, SIZE, SIZE, 15)
    assert check.inliers >= 15, check  # the count alone would pass
    assert not check.passed and "shuffled" in check.why, check


def test_inliers_in_a_small_patch_fail_the_spread():
    xy0, xy1 = _two_views(200, spread=0.05)
    _, check = C.check_geometry(xy0, xy1, SIZE, SIZE, 15)
    assert check.inliers >= 150 and min(check.coverage) < C.MIN_SPREAD
    assert not check.passed and "within" in check.why


def test_too_few_inliers_fail_before_the_chance_fit():
    xy0, xy1 = _two_views(12)
    _, check = C.check_geometry(xy0, xy1, SIZE, SIZE, 15)
    assert not check.passed and check.chance == 0 and "fewer than 15" in check.why


def test_chance_inliers_is_the_verification_of_seeded_shuffles():
    """Independent reference: OpenCV's MAGSAC++ fundamental fit run directly on the same
    permutations (numpy's seeded generator), the largest inlier count."""
    g = np.random.default_rng(5)
    xy0, xy1 = g.uniform(0, 640, (400, 2)), g.uniform(0, 480, (400, 2))
    rng = np.random.default_rng(7)
    counts = []
    for _ in range(3):
        perm = rng.permutation(400)
        _, mask = cv2.findFundamentalMat(xy0, xy1[perm], cv2.USAC_MAGSAC, V.VERIFY_THRESHOLD, 0.999, 10000)
        counts.append(0 if mask is None else int(mask.sum()))
    assert C.chance_inliers(xy0, xy1, V.VERIFY_THRESHOLD, shuffles=3, seed=7) == max(counts)
    assert C.chance_inliers(xy0[:5], xy1[:5]) == 0


def test_one_to_one_keeps_the_best_match_of_each_place():
    """Hand-made matches: a point of image 0 matched to two places (one-to-many), a place of
    image 1 matched from two points (many-to-one), the same correspondence twice (a duplicate
    within 2 px), and two distinct matches 2.5 px apart in both images."""
    xy0 = np.array([[10, 10], [10.5, 10], [50, 50], [80, 50], [100, 100], [101, 101], [200, 200], [202.5, 200]])
    xy1 = np.array([[20, 20], [300, 40], [60, 60], [60.8, 60], [110, 110], [111, 110.5], [210, 210], [212.5, 210]])
    sc = np.array([0.9, 0.95, 0.8, 0.7, 0.6, 0.65, 0.5, 0.4])
    keep = V.one_to_one(xy0, xy1, sc)
    assert keep.tolist() == [False, True, True, False, False, True, True, True]
    assert np.all(keep <= V.dedup_matches(xy0, xy1, sc))  # what dedup drops, one_to_one drops too
    assert V.one_to_one(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)).shape == (0,)


# ----------------------------------------------------------------------------- budgets
def test_cascade_view_budgets():
    """Each view level of the cascade shares a quarter of the plain budget among its views,
    synthesised from the half-size image and detected without the up-sampled pyramid level;
    auto / full keep the whole budget, image and pyramid."""
    assert C.CASCADE_VIEWS == V.ViewBudget(0.25, 0, 0.5)
    assert [V.view_points(8000, v, C.CASCADE_VIEWS) for v in V.views_of_level(1)] == [400] * 5
    assert [V.view_points(8000, v, C.CASCADE_VIEWS) for v in V.views_of_level(2)] == [200] * 10
    assert [V.view_points(8000, v) for v in V.views_of_level(1)] == [1600] * 5  # auto / full: the whole
    assert V.WHOLE_BUDGET.id == V.VIEW_SET_ID and C.CASCADE_VIEWS.id != V.VIEW_SET_ID
    assert V.ViewBudget(0.25, 0, 1.0).id != C.CASCADE_VIEWS.id  # the image's scale is in the fingerprint
    for bad in ((0.0, 0, 1.0), (0.5, 0, 1.5), (0.5, 0, 0.0)):
        with pytest.raises(ValueError, match="share and scale"):
            V.ViewBudget(*bad)


@pytest.fixture(scope="module")
def extractor():
    return Extractor(load_detector("default", num_points=200, subpixel=True), load_descriptor("default"))


def test_views_respect_their_budget(extractor):
    img = cv2.imread(str(TEST_IM), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    f, idx = V.view_features(extractor, img, V.views_of_level(1), budget=C.CASCADE_VIEWS)
    counts = np.bincount(idx, minlength=6)[1:6]
    assert counts.max() <= 10 and counts.sum() > 0  # 200 x 0.25 / 5 views
    # no up-sampled level: no keypoint finer than the plain pyramid's first level
    view = V.synthesize(img, V.views_of_level(1)[0])[0]
    with_up = extractor.detector.detect(view, num_points=20)
    without = extractor.features(view, num_points=20, upsampled_levels=0).keypoints
    assert with_up[:, 2].min() < without[:, 2].min()


# ----------------------------------------------------------------------------- the cascade
def test_a_pair_whose_plain_geometry_passes_gets_the_plain_matches(extractor):
    """test_im against itself: level 0 passes, the answer is exactly the plain pipeline's
    tentative matches, and no view is ever computed."""
    cfg = FeatureConfig(num_points=200, max_image_size=0)
    plain = matching.match_images(TEST_IM, TEST_IM, extractor, cfg)
    res = matching.match_images(TEST_IM, TEST_IM, extractor, cfg, view_synthesis="cascade")
    assert res["levels_used"] == 0 and res["passed"] and res["levels_tried"] == 0
    assert np.array_equal(res["matches"], plain["matches"]) and np.array_equal(res["scores"], plain["scores"])
    assert np.array_equal(res["kpts0"], plain["kpts0"]) and np.all(res["views0"] == 0)
    assert len(res["level_seconds"]) == 1 and res["inliers"].sum() >= 15


@pytest.mark.slow
def test_nothing_passes_and_the_answer_is_the_plain_one(extractor, tmp_path):
    """Two unrelated images: no level passes, the answer is the plain matches."""
    g = np.random.default_rng(0)
    noise = cv2.GaussianBlur(g.uniform(0, 255, (240, 320)).astype(np.float32), (0, 0), 2.0)
    cv2.imwrite(str(tmp_path / "noise.png"), np.clip(noise * 3 - 255, 0, 255).astype(np.uint8))
    cfg = FeatureConfig(num_points=200, max_image_size=0)
    plain = matching.match_images(TEST_IM, tmp_path / "noise.png", extractor, cfg)
    res = matching.match_images(TEST_IM, tmp_path / "noise.png", extractor, cfg, view_synthesis="cascade")
    assert not res["passed"] and res["levels_tried"] == V.LAST_LEVEL and res["levels_used"] == 0
    assert np.array_equal(res["matches"], plain["matches"]) and np.array_equal(res["kpts1"], plain["kpts1"])
    assert len(res["checks"]) == V.NUM_LEVELS and not any(c.passed for c in res["checks"])


@pytest.mark.slow
def test_a_strongly_tilted_pair_is_answered_by_a_view_level(tilted_pair):
    """An HPatches image against itself tilted by 5 (known affine): the plain geometry fails,
    a view level passes, its verified matches are mostly right and far more than the plain
    pipeline's right ones; the collection stages (features.h5 with the cascade's budgets)
    give the same answer."""
    tmp_path, a = tilted_pair
    ex = Extractor(load_detector("default", num_points=2000, subpixel=True), load_descriptor("default"))
    cfg = FeatureConfig(num_points=2000, max_image_size=0)

    def right(r):
        m = r["matches"]
        p = np.column_stack([r["kpts0"][m[:, 0], :2], np.ones(len(m))]) @ a.T
        return int((np.linalg.norm(p - r["kpts1"][m[:, 1], :2], axis=1) < 3).sum())

    plain = matching.match_images(tmp_path / "a.png", tmp_path / "b.png", ex, cfg)
    res = matching.match_images(tmp_path / "a.png", tmp_path / "b.png", ex, cfg, view_synthesis="cascade")
    assert not res["checks"][0].passed and res["passed"] and res["levels_used"] >= 1, C.describe_checks(res["checks"])
    assert right(res) >= 0.7 * len(res["matches"]) and right(res) > 2 * right(plain), (right(res), right(plain))
    assert len(res["level_seconds"]) == res["levels_used"] + 1
    # the stages: features.h5 holds every level with the cascade's budgets; the match stage answers alike
    s = matching.extract_features(tmp_path, ["a.png", "b.png"], tmp_path / "f.h5", cfg, extractor=ex,
                                  progress=False, view_synthesis="cascade")
    assert s.done == ["a.png", "b.png"]
    with hloc_io.open_h5(tmp_path / "f.h5", "r") as fd:
        assert fd.attrs["extractor"] == matching.features_fingerprint(cfg, "cascade") != \
            matching.features_fingerprint(cfg, "auto")
    matching.match_pairs([("a.png", "b.png")], tmp_path / "f.h5", tmp_path / "m.h5",
                         MatcherConfig(view_synthesis="cascade"), progress=False)
    m, _ = hloc_io.read_matches(tmp_path / "m.h5", "a.png", "b.png")
    assert np.array_equal(np.sort(m, axis=0), np.sort(res["matches"], axis=0))


@pytest.mark.slow
def test_the_benchmark_method_answers_level_0_as_the_plain_method(tmp_path):
    """keynet:view_synthesis=cascade on a pair whose plain geometry passes gives the plain
    method's (keynet-upright's) tentative matches, and charges the pair level 0 only."""
    opts = MethodOptions(num_points=150, max_image_size=0)
    plain, casc = build_method("keynet-upright", opts), build_method("keynet:view_synthesis=cascade", opts)
    fp, fc = plain.extract(TEST_IM), casc.extract(TEST_IM)
    assert len(fc.extra["level_seconds"]) == V.NUM_LEVELS
    r = casc.match_pair(fc, fc)
    assert r.level == 0 and len(r.level_seconds) == 1
    assert np.array_equal(r.matches, plain.match(fp, fp))


# ----------------------------------------------------------------------------- options
def test_cascade_is_an_option_and_bad_specs_are_errors():
    assert "cascade" in VIEW_SYNTHESIS_MODES and MatcherConfig(view_synthesis="cascade").cascade
    with pytest.raises(ValueError, match="unknown view synthesis"):
        MatcherConfig(view_synthesis="cascades")
    opts = MethodOptions(num_points=100)
    with pytest.raises(MethodError, match="does not apply"):
        build_method("keynet:view_synthesis=cascade,view_matches=tentative", opts)
    m30 = build_method("keynet:view_synthesis=cascade,min_inliers=30", opts)
    assert m30.matcher.min_inliers == 30 and m30.tag != build_method("keynet:view_synthesis=cascade", opts).tag


@pytest.mark.parametrize("command", ["demo", "match"])
def test_wide_baseline_with_another_view_synthesis_is_one_error_line(tmp_path, capsys, command):
    from keynet.commands import match, match_demo

    cv2.imwrite(str(tmp_path / "a.png"), cv2.imread(str(TEST_IM)))
    argv = ["--wide-baseline", "--view-synthesis", "auto"]
    if command == "demo":
        code = match_demo.main([str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--out", str(tmp_path / "m.png")]
                               + argv)
    else:
        code = match.main(["--image-dir", str(tmp_path), "--out", str(tmp_path / "o")] + argv)
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--wide-baseline" in err[0] and "auto" in err[0], err
    assert not (tmp_path / "o" / "features.h5").exists() and not (tmp_path / "m.png").exists()  # before any work


def test_a_place_matched_twice_counts_once():
    """verify_level: 12 true correspondences, each found twice (one point at two pyramid
    levels, or in two views) are 12, not 24: under the count of 15, the level fails; the
    plain matches all stay in level 0's answer, each place's best marked as an inlier."""
    xy0, xy1 = _two_views(12, seed=4)
    k0 = np.column_stack([np.vstack([xy0, xy0]), np.ones(24)])
    k1 = np.column_stack([np.vstack([xy1, xy1]), np.ones(24)])
    a = {"kpts": k0, "hw": (480, 640)}
    b = {"kpts": k1, "hw": (480, 640)}
    m = np.column_stack([np.arange(24), np.arange(24)])
    sc = np.r_[np.full(12, 0.9), np.full(12, 0.8)].astype(np.float32)
    mm, ss, inl, check = C.verify_level(a, b, MatcherConfig(), 0, lambda: (m, sc))
    assert check.tentative == 12 and not check.passed and "fewer than 15" in check.why, check
    assert len(mm) == 24 and not inl[12:].any()
