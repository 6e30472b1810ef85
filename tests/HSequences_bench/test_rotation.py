"""Rotation benchmark: protocol geometry, metrics on known cases, orientation sign
convention, feature cache, methods' plumbing and the bench-rotation command line."""
from __future__ import annotations

from pathlib import Path
from typing import List

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from kornia.feature import OriNet, PatchDominantGradientOrientation

from keynet import cli
from HSequences_bench.evaluate import evaluate_pair
from HSequences_bench.hsequences import ImagePair
from HSequences_bench.rotation import (AngleError, FeatureSet, ImageRef, Method, default_config, direct_features,
                                       evaluate_cases, load_image, pair_cases, pair_metrics, parse_angles,
                                       rotate_image, single_cases)
from HSequences_bench.rotation_cache import FeatureStore, cache_path
from hardnet import OriNet as ProjectOriNet
from hardnet import save_orinet
from HSequences_bench.harness.rotation_methods import (KorniaOrienter, MethodError, SharedDetection, build_methods,
                                               keynet_method, load_kornia_orinet, opencv_method)
from HSequences_bench.rotation_report import summary_table, wide_table
from keynet.commands import bench_rotation
from keynet.base.geometry import angle_difference, rotation_homography, transfer_orientation, warp_points

SHAPE = (90, 120)  # rows, cols of the synthetic images


def _texture(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _write_grey(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))  # .ppm needs 3 channels


def _sequence(root: Path, name: str = "v_syn", shift: float = 3.0) -> Path:
    """An HPatches-layout sequence: image k is image 1 shifted by ((k-1) * shift, 0) px."""
    base = _texture()
    for k in range(1, 7):
        h = np.array([[1.0, 0.0, (k - 1) * shift], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        _write_grey(root / name / f"{k}.ppm", cv2.warpPerspective(base, h, SHAPE[::-1]))
        if k > 1:
            (root / name / f"H_1_{k}").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in h) + "\n")
    return root


# ------------------------------------------------------------------------------- geometry
def test_rotate_image_multiples_of_90_are_rot90():
    img = _texture().astype(np.float32)
    for k in (1, 2, 3):
        rot, h = rotate_image(img, 90 * k)
        np.testing.assert_array_equal(rot, np.rot90(img, k))  # np.rot90: counter-clockwise on screen
    rot, h = rotate_image(img, 0)
    np.testing.assert_array_equal(rot, img)
    np.testing.assert_array_equal(h, np.eye(3))
    assert rotate_image(img, 30)[0].shape == rotation_homography(img.shape, 30)[1]


def test_pair_cases_compose_rotation_with_the_sequence_homography(tmp_path):
    data = _sequence(tmp_path, shift=3.0)
    cases = pair_cases(data, "v_syn", [0, 90, 30], max_pairs=2)
    assert [(c.image, c.angle) for c in cases] == [(2, 0), (2, 90), (2, 30), (3, 0), (3, 90), (3, 30)]
    c = cases[4]  # pair (1, 3) rotated by 90: H_1_3 shifts by 6 px in x
    assert c.shape_src == SHAPE and c.shape_dst == SHAPE[::-1] and c.dst.angle == 90 and c.src.angle == 0
    rows, cols = SHAPE
    centre, new_centre = np.array([(cols - 1) / 2, (rows - 1) / 2]), np.array([(rows - 1) / 2, (cols - 1) / 2])
    p = np.array([[30.0, 20.0]])
    q = p + [6.0, 0.0] - centre  # in image 3, relative to its centre
    # counter-clockwise on screen by 90 (y down): right of the centre -> above it
    expected = new_centre + [q[0, 1], -q[0, 0]]
    np.testing.assert_allclose(warp_points(p, c.h_src_to_dst)[0], expected, atol=1e-9)
    # the rendered destination image holds image 1's pixel there (a shift and a rot90: exact)
    x, y = np.rint(expected).astype(int)
    assert load_image(c.dst)[y, x] == load_image(c.src)[20, 30]
    # any angle: the composition is exactly H_rot @ H_1k
    h_rot, _ = rotation_homography(SHAPE, 30)
    np.testing.assert_allclose(cases[5].h_src_to_dst, h_rot @ np.array([[1, 0, 6], [0, 1, 0], [0, 0, 1.0]]))


def test_parse_angles():
    assert parse_angles(["0", "90"]) == [0.0, 90.0]
    assert parse_angles(["0,15", "22.5"]) == [0.0, 15.0, 22.5]
    assert parse_angles(["0:350:10"]) == [float(a) for a in range(0, 360, 10)]
    for bad, why in ((["360"], r"\[0, 360\)"), (["-10"], r"\[0, 360\)"), (["abc"], "bad angle"),
                     (["0", "0"], "repeated"), ([""], "empty"), (["0:90:0"], "step")):
        with pytest.raises(AngleError, match=why):
            parse_angles(bad)


# -------------------------------------------------------------------------------- metrics
def _synthetic_source(shape, rotate_orientations: bool = True, upright: bool = False, n: int = 60):
    """Features whose keypoints and orientations are exactly carried by the rotation of each
    image (or whose orientations ignore it), with unique descriptors."""
    rng = np.random.default_rng(1)
    rows, cols = shape
    pts = np.c_[rng.uniform(0.3 * cols, 0.7 * cols, n), rng.uniform(0.3 * rows, 0.7 * rows, n),
                rng.uniform(1.0, 3.0, n), rng.uniform(0, 1, n)]
    desc = rng.normal(size=(n, 16)).astype(np.float32)
    ori = rng.uniform(0, 360, n)

    def source(method: Method, ref: ImageRef) -> FeatureSet:
        h, _ = rotation_homography(shape, ref.angle)
        o = transfer_orientation(h, pts[:, :2], ori) if rotate_orientations else ori
        return FeatureSet(warp_points(pts, h), desc, None if upright else o)
    return source


def _unused(image):
    raise AssertionError("the feature source gives the features")


def test_exactly_transformed_features_score_perfectly_and_orientation_error_is_the_angle(tmp_path):
    _write_grey(tmp_path / "s" / "1.ppm", _texture())
    angles = [0, 30, 90, 200, 270]
    cases = single_cases(tmp_path, "s", angles)
    for kind, expected_err in (("equivariant", [0, 0, 0, 0, 0]), ("fixed", [0, 30, 90, 160, 90]),
                               ("upright", [np.nan] * 5)):
        src = _synthetic_source(SHAPE, rotate_orientations=kind != "fixed", upright=kind == "upright")
        recs = evaluate_cases(cases, [Method(kind, _unused)], src)
        for rec, err in zip(recs, expected_err):
            assert rec["rep_single"] == pytest.approx(100.0) and rec["rep_multi"] == pytest.approx(100.0)
            assert rec["mma@3"] == 1.0 and rec["mma@5"] == 1.0 and rec["ms@3"] == pytest.approx(1.0)
            assert rec["num_kpts"] == 60 and rec["num_features"] == 60
            if np.isnan(err):
                assert np.isnan(rec["ori_err"]) and np.isnan(rec["ori_points"])
            else:
                assert rec["ori_err"] == pytest.approx(err, abs=1e-6) and rec["ori_points"] == 60
    table = summary_table(recs)
    assert list(table["angle"]) == angles and (table["cases"] == 1).all()
    assert list(wide_table(table, "single", "mma@3")["angle"]) == ["0", "30", "90", "200", "270", "mean"]


def test_orientation_error_takes_the_closest_of_several_orientations_at_one_point(tmp_path):
    _write_grey(tmp_path / "s" / "1.ppm", _texture())
    case = single_cases(tmp_path, "s", [90])[0]
    src = _synthetic_source(SHAPE)
    a, b = src(None, case.src), src(None, case.dst)
    # the first point twice, with a second orientation listed first in the rotated image
    a2 = FeatureSet(np.r_[a.keypoints[:1], a.keypoints], np.r_[a.descriptors[:1], a.descriptors],
                    np.r_[a.orientations[:1], a.orientations])
    b2 = FeatureSet(np.r_[b.keypoints[:1], b.keypoints], np.r_[b.descriptors[:1] + 5, b.descriptors],
                    np.r_[b.orientations[:1] + 100, b.orientations])
    assert pair_metrics(a2, b2, case)["ori_err"] == pytest.approx(0.0, abs=1e-6)


def test_pair_metrics_agree_with_the_main_benchmark(tmp_path):
    data = _sequence(tmp_path)
    case = pair_cases(data, "v_syn", [45], max_pairs=1)[0]
    rng = np.random.default_rng(3)
    src = np.c_[rng.uniform(0, SHAPE[1], (300, 2)) * [1, SHAPE[0] / SHAPE[1]], rng.uniform(1, 4, 300),
                rng.uniform(0, 1, 300)]
    dst = warp_points(src, case.h_src_to_dst)
    dst[:, :2] += rng.normal(scale=2.0, size=(300, 2))
    dsc_s = rng.normal(size=(300, 8)).astype(np.float32)
    dsc_d = dsc_s + rng.normal(scale=0.3, size=dsc_s.shape).astype(np.float32)
    cfg = default_config()
    cfg.top_k = 200
    ours = pair_metrics(FeatureSet(src, dsc_s), FeatureSet(dst, dsc_d), case, cfg)
    pair = ImagePair("v_syn", 2, case.shape_src, case.shape_dst, case.h_src_to_dst)
    ref = evaluate_pair(src, dst, pair, cfg, dsc_s, dsc_d)
    assert ours["rep_single"] == ref["rep_single_scale"] and ours["rep_multi"] == ref["rep_multi_scale"]
    assert ours["mma@3"] == ref["mma@3"] and ours["ms@3"] == ref["ms@3"] and ours["ms@5"] == ref["ms@5"]
    assert ours["num_features"] == ref["num_features"] and ours["num_mutual"] == ref["num_mutual_corresp"]
    assert 0 < ours["rep_single"] < 100


# ------------------------------------------------------------------- orientation sign, real image
@pytest.fixture(scope="module")
def real_image_dir(hseq_mini, tmp_path_factory) -> Path:
    img = cv2.imread(str(hseq_mini / "v_boat" / "1.ppm"), cv2.IMREAD_GRAYSCALE)
    root = tmp_path_factory.mktemp("real")
    _write_grey(root / "v_boat" / "1.ppm", cv2.resize(img, (320, 256), interpolation=cv2.INTER_AREA))
    return root


def test_sift_orientation_error_is_small_on_a_rotated_real_image(real_image_dir):
    cases = single_cases(real_image_dir, "v_boat", [90, 30])
    recs = evaluate_cases(cases, [opencv_method("sift", 300)], direct_features)
    r90, r30 = recs
    assert r90["ori_points"] > 100 and r90["ori_err"] < 3.0  # a wrong sign would give ~180
    assert r30["ori_err_median"] < 5.0  # and ~60 here
    assert r90["mma@3"] > 0.9 and r90["num_kpts"] <= 300


def test_kornia_orienter_follows_the_project_convention(real_image_dir):
    img = load_image(ImageRef(real_image_dir / "v_boat" / "1.ppm", "x")) / 255.0
    rng = np.random.default_rng(0)
    k = np.c_[rng.uniform(60, 260, 100), rng.uniform(60, 200, 100), rng.uniform(1, 3, 100)]
    orienter = KorniaOrienter(PatchDominantGradientOrientation(32), device="cpu")
    for angle, tol in ((90, 0.01), (30, 5.0)):
        rot, h = rotate_image(img, angle)
        err = angle_difference(transfer_orientation(h, k[:, :2], orienter.estimate(img, k)),
                               orienter.estimate(rot, warp_points(k, h)))
        assert np.median(err) < tol


def test_load_kornia_orinet(tmp_path):
    net = OriNet(pretrained=False)
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "orinet.pth")
    loaded = load_kornia_orinet(tmp_path / "orinet.pth")
    assert torch.equal(loaded.features[0].weight, net.features[0].weight)
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(MethodError, match="not a kornia OriNet"):
        load_kornia_orinet(tmp_path / "other.pth")
    with pytest.raises(MethodError, match="not found"):
        load_kornia_orinet(tmp_path / "missing.pth")


# ----------------------------------------------------------------------- methods and cache
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*pyramid level")
def test_build_methods_keynet_variants_on_a_real_image(real_image_dir, tmp_path):
    torch.manual_seed(0)
    save_orinet(tmp_path / "orinet.pt", ProjectOriNet())
    torch.save(OriNet(pretrained=False).state_dict(), tmp_path / "kornia_orinet.pth")
    names = ["learned", "gradient", "upright", "kornia-orinet", "orb"]
    methods, skipped = build_methods(names, num_points=100, orientation_weights=tmp_path / "orinet.pt",
                                     kornia_orinet_weights=tmp_path / "kornia_orinet.pth", device="cpu")
    assert [m.name for m in methods] == names and not skipped
    assert methods[-1].distance == "hamming" and len({m.tag for m in methods[:4]}) == 4
    img = load_image(ImageRef(real_image_dir / "v_boat" / "1.ppm", "x"))
    feats = {m.name: FeatureSet(*m.extract(img)) for m in methods}
    for name in names[:4]:
        f = feats[name]
        # the oriented variants share one rotation-averaged detection; upright is today's pipeline
        np.testing.assert_array_equal(f.keypoints, feats["learned" if f.orientations is not None else "upright"].keypoints)
        assert 0 < len(f.keypoints) <= 100 and f.descriptors.shape == (len(f.keypoints), 128)
        assert (f.orientations is None) == (name == "upright")
    assert feats["orb"].descriptors.dtype == np.uint8 and feats["orb"].descriptors.shape[1] == 32
    plain, _ = build_methods(["learned", "upright"], num_points=100, orientation_weights=tmp_path / "orinet.pt",
                             device="cpu", rotation_average=False, subpixel=False)
    same = [FeatureSet(*m.extract(img)).keypoints for m in plain]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(feats["learned"].keypoints, feats["upright"].keypoints)
    # subpixel auto: the oriented variants get the sub-pixel positions of the same points,
    # upright keeps today's; subpixel=True gives them to upright as well
    auto, _ = build_methods(["learned", "upright"], num_points=100, orientation_weights=tmp_path / "orinet.pt",
                            device="cpu", rotation_average=False)
    both, _ = build_methods(["upright"], num_points=100, device="cpu", rotation_average=False, subpixel=True)
    sub, official = (FeatureSet(*m.extract(img)).keypoints for m in auto)
    np.testing.assert_array_equal(official, same[1])
    np.testing.assert_array_equal(FeatureSet(*both[0].extract(img)).keypoints, sub)
    np.testing.assert_array_equal(sub[:, 2:], official[:, 2:])
    moved = np.abs(sub[:, :2] - official[:, :2])
    assert moved.max() > 0.05 and np.median(moved) < 1.0  # moved, by a fraction of a pixel for most
    assert auto[0].tag != plain[0].tag and auto[1].tag == plain[1].tag != both[0].tag
    # the default rotation average (8 turns) and the right angles only are cached apart; the
    # right angles keep the tag of the caches written before the turns were an option
    four, _ = build_methods(["learned"], num_points=100, orientation_weights=tmp_path / "orinet.pt",
                            device="cpu", rotation_turns=4)
    assert " rotavg8 " in methods[0].tag and " rotavg " in four[0].tag
    _, skipped = build_methods(["kornia-orinet", "sift"], num_points=10)
    assert list(skipped) == ["kornia-orinet"]


class _FakeDetector:
    def __init__(self):
        self.calls = 0

    def prepare(self, image):
        return np.asarray(image, np.float64) / 255.0

    def detect_prepared(self, img):
        self.calls += 1
        return np.array([[10.0, 12.0, 2.0, 1.0], [30.0, 20.0, 3.0, 0.5]])


class _FakeDescriptor:
    def describe(self, img, kpts, ori):
        return np.zeros((len(kpts), 4), np.float32) + (0 if ori is None else ori[:, None])


class _FakeOrientation:
    def estimate(self, img, kpts):
        return np.full(len(kpts), 45.0, np.float32)


def test_keynet_variants_share_one_detection_per_image():
    det = _FakeDetector()
    shared = SharedDetection(det)
    upright = keynet_method("upright", shared, _FakeDescriptor())
    oriented = keynet_method("gradient", shared, _FakeDescriptor(), _FakeOrientation())
    img = _texture().astype(np.float32)
    kp, dsc, ori = upright.extract(img)
    assert ori is None and dsc.shape == (2, 4) and (dsc == 0).all()
    kp2, dsc2, ori2 = oriented.extract(img)
    np.testing.assert_array_equal(kp, kp2)
    assert (ori2 == 45).all() and (dsc2 == 45).all()
    assert det.calls == 1
    oriented.extract(img + 1)
    assert det.calls == 2


def test_feature_store_caches_on_disk(tmp_path):
    _write_grey(tmp_path / "s" / "1.ppm", _texture())
    calls: List[float] = []

    def extract(image):
        calls.append(float(image.mean()))
        return np.ones((3, 4), np.float32), np.zeros((3, 8), np.float32), None
    method = Method("m", extract, tag="n=3")
    ref = ImageRef(tmp_path / "s" / "1.ppm", "data/s/1", 90.0)
    store = FeatureStore(tmp_path / "cache")
    f = store(method, ref)
    assert store(method, ref) is f and len(calls) == 1 and store.extracted == 1
    path = cache_path(tmp_path / "cache", method, ref)
    assert path.is_file() and path.name == "1@90.npz"
    again = FeatureStore(tmp_path / "cache")(method, ref)
    assert len(calls) == 1 and again.orientations is None
    np.testing.assert_array_equal(again.keypoints, f.keypoints)
    other = Method("m", extract, tag="n=4")  # another setting: another cache entry
    assert cache_path(tmp_path / "cache", other, ref) != path
    path.write_bytes(b"broken")
    FeatureStore(tmp_path / "cache")(method, ref)
    assert len(calls) == 2


# ---------------------------------------------------------------------------- command line
def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("extra, message", [
    (["--angles", "0", "400"], "[0, 360)"),
    (["--angles", "ninety"], "bad angle"),
    (["--methods", "sift", "surf"], "unknown method 'surf'"),
    (["--orientation-weights", "/nonexistent/orinet.pt"], "orientation network weights not found"),
    (["--kornia-orinet-weights", "/nonexistent/OriNet.pth"], "kornia OriNet weights not found"),
    (["--sequences", "v_absent"], "'v_absent' not found"),
    (["--num-points", "0"], "--num-points"),
])
def test_command_user_errors(tmp_path, capsys, extra, message):
    data = _sequence(tmp_path / "data")
    try:
        rc = bench_rotation.main(["--data-dir", str(data), "--out-dir", str(tmp_path / "out"), "--progress", "false"]
                                 + extra)
    except SystemExit as e:  # a value the option's type refuses (argparse): the same one line
        rc = e.code
    assert rc == 2 and message in _error_line(capsys)


def test_command_missing_folder_and_no_sequences(tmp_path, capsys):
    assert bench_rotation.main(["--data-dir", str(tmp_path / "nothere")]) == 2
    assert "data directory not found" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert bench_rotation.main(["--data-dir", str(tmp_path / "empty")]) == 2
    assert "no complete sequence" in _error_line(capsys)


def test_command_runs_and_reuses_its_cache(tmp_path, capsys):
    data = _sequence(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["bench-rotation", "--data-dir", str(data), "--angles", "0", "90", "--methods", "sift", "orb",
            "--num-points", "200", "--max-pairs", "1", "--out-dir", str(out), "--progress", "false"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "8 image(s) extracted" in first  # (1@0, 2@0, 2@90, then single: 1@90) x 2 methods
    for name in ("rotation_pairs.csv", "rotation_single.csv", "rotation_pairs_cases.csv", "rotation.md",
                 "rotation_pairs_mma3.png", "rotation_single_mma3.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "rotation_pairs.csv")
    assert list(table["method"]) == ["sift", "sift", "orb", "orb"] and list(table["angle"]) == [0, 90, 0, 90]
    assert {"rep_single", "mma@3", "mma@5", "ms@3", "ori_err", "num_kpts"} <= set(table.columns)
    assert "MMA@3" in (out / "rotation.md").read_text()
    assert cli.main(argv + ["--plot", "false"]) == 0
    assert "0 image(s) extracted" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*pyramid level")
def test_build_methods_with_affine_shapes(real_image_dir):
    """--affine: the Key.Net variants describe their regions through the affine shape (the
    same keypoints, other descriptors, a cache tag of their own); kornia-orinet refuses it."""
    img = load_image(ImageRef(real_image_dir / "v_boat" / "1.ppm", "x"))
    iso, _ = build_methods(["upright", "sift"], num_points=100, device="cpu")
    aff, _ = build_methods(["upright", "sift"], num_points=100, device="cpu", affine="moments")
    a, b = FeatureSet(*iso[0].extract(img)), FeatureSet(*aff[0].extract(img))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert a.descriptors.shape == b.descriptors.shape and not np.allclose(a.descriptors, b.descriptors)
    assert aff[0].tag == iso[0].tag + " affine=moments" and aff[1].tag == iso[1].tag
    with pytest.raises(MethodError, match="isotropic frames only"):
        build_methods(["kornia-orinet"], num_points=10, kornia_orinet_weights=__file__, affine="moments")
