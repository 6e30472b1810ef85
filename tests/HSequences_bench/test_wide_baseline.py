"""HSequences_bench/wide_baseline.py: the WxBS and EVD metrics pinned to the reference
``wxbs_benchmark.metrics`` (0.0.4) on fixed inputs, the dataset readers (the real WxBS
validation pairs in ../shared, a tiny EVD folder), MAGSAC++ estimators, the synthetic
extreme-view pair maker, the result writers and the one-line errors."""
from __future__ import annotations

import csv
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import _need, _under_ci  # the project's ../shared and CI helpers
from HSequences_bench import wide_baseline as wb


def _reference(name: str):
    """Import a reference module: skip the test that needs it if it is missing, except under
    CI (``CI=true``), where a missing reference is an error, not a skip."""
    if _under_ci():
        return importlib.import_module(name)  # ImportError -> the test errors -> CI fails
    return pytest.importorskip(name)


@pytest.fixture(scope="module")
def ref():
    """The reference metrics ``wxbs_benchmark.metrics``: only the tests that compare with it
    ask for it (and skip without it); the others run without ``wxbs-benchmark``."""
    return _reference("wxbs_benchmark.metrics")


# --------------------------------------------------------------------------- fixed inputs


K_CAM = np.array([[800.0, 0, 400], [0, 800.0, 300], [0, 0, 1]])


def _pose(yaw_deg: float, t) -> tuple:
    a = np.radians(yaw_deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]), np.asarray(t, float)


def _fundamental(R, t) -> np.ndarray:
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Kinv = np.linalg.inv(K_CAM)
    F = Kinv.T @ tx @ R @ Kinv
    return F / np.linalg.norm(F)


def _two_view(seed: int = 7, n: int = 120, noise: float = 0.7):
    """A calibrated two-view scene: ground-truth F (x2^T F x1 = 0) and noisy GT correspondences."""
    rng = np.random.default_rng(seed)
    R, t = _pose(25.0, [-1.0, 0.1, 0.2])
    X = np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 9, n)]
    x1 = (K_CAM @ X.T).T
    x2 = (K_CAM @ (R @ X.T + t[:, None])).T
    x1, x2 = x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:]
    corrs = np.c_[x1, x2] + rng.normal(0, noise, (n, 4))
    return _fundamental(R, t), corrs, rng


def _f_cases():
    F, corrs, rng = _two_view()
    perturbed = _fundamental(*_pose(25.6, [-1.0, 0.14, 0.25]))  # a slightly wrong pose: errors over 0..19 px
    U, S, Vt = np.linalg.svd(rng.normal(size=(3, 3)))
    wrong = U @ np.diag([1.0, 0.5, 0.0]) @ Vt  # a rank-2 F of another geometry
    # A rectified pair (y1 == y2): exact zero residuals for some, 0.5..14 px for the others.
    rect = np.array([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    rc = np.c_[rng.uniform(0, 800, 40), np.round(rng.uniform(0, 600, 40))]
    dy = np.r_[np.zeros(10), np.linspace(0.5, 14.0, 30)]
    rect_corrs = np.c_[rc, rc[:, 0] - rng.uniform(5, 60, 40), rc[:, 1] + dy]
    return {"gt": (F, corrs), "perturbed": (perturbed, corrs), "wrong": (wrong, corrs),
            "rank3": (rng.normal(size=(3, 3)), corrs), "rectified": (rect, rect_corrs)}


F_CASES = _f_cases()


def _ref_recall(ref, F, corrs) -> np.ndarray:
    return np.asarray(ref.fraction_of_gt_corrs_consisent_with_F(np.asarray(F, np.float64), corrs), np.float64)


# --------------------------------------------------------------------------- WxBS metric


@pytest.mark.parametrize("case", sorted(F_CASES))
def test_f_recall_matches_reference(case, ref):
    F, corrs = F_CASES[case]
    ours = wb.wxbs_recall(F, corrs)
    expected = _ref_recall(ref, F, corrs)
    assert ours.shape == (20,)
    np.testing.assert_allclose(ours, expected, atol=1e-6)  # the reference averages in float32
    assert wb.wxbs_maa(F, corrs) == pytest.approx(float(np.mean(expected)), abs=1e-6)


def test_f_cases_are_not_trivial():
    """The fixed inputs exercise the whole curve: neither all-pass nor all-fail."""
    gt, pert, wrong = (wb.wxbs_recall(*F_CASES[c]) for c in ("gt", "perturbed", "wrong"))
    assert gt[0] == 0 and gt[3] > 0.95  # 0.7 px noise: nothing at exactly 0, all within a few px
    assert pert[4] < 0.1 and 0.2 < pert[8] < 0.8 and pert[16] == 1.0
    assert wrong.mean() < 0.3 and wb.wxbs_maa(*F_CASES["gt"]) > wb.wxbs_maa(*F_CASES["perturbed"])
    rect = wb.wxbs_recall(*F_CASES["rectified"])
    assert rect[0] == pytest.approx(0.25)  # the exact zeros count at the 0 px threshold


def test_f_distance_is_symmetric_in_the_two_images(ref):
    """Ground truth on either side: swapping the images (corrs x2 x1, F^T) changes nothing."""
    for case in ("gt", "perturbed", "wrong"):
        F, corrs = F_CASES[case]
        swapped = corrs[:, [2, 3, 0, 1]]
        np.testing.assert_allclose(wb.symmetric_epipolar_distance(F.T, swapped[:, :2], swapped[:, 2:]),
                                   wb.symmetric_epipolar_distance(F, corrs[:, :2], corrs[:, 2:]), rtol=1e-9)
        np.testing.assert_allclose(wb.wxbs_recall(F.T, swapped), _ref_recall(ref, F, corrs), atol=1e-6)
    # the transpose (F of the wrong direction) is an error, not the same F
    F, corrs = F_CASES["perturbed"]
    assert wb.wxbs_maa(F.T, corrs) < 0.5 * wb.wxbs_maa(F, corrs)


def test_failed_f_scores_zero_like_a_zero_f_in_the_reference(ref):
    _, corrs = F_CASES["gt"]
    assert np.array_equal(wb.wxbs_recall(None, corrs), np.zeros(20))
    np.testing.assert_array_equal(_ref_recall(ref, np.zeros((3, 3)), corrs), np.zeros(20))
    np.testing.assert_array_equal(wb.wxbs_recall(np.zeros((3, 3)), corrs), np.zeros(20))
    nan_F = np.full((3, 3), np.nan)
    np.testing.assert_array_equal(wb.wxbs_recall(nan_F, corrs), _ref_recall(ref, nan_F, corrs))
    assert wb.wxbs_maa(None, corrs) == 0.0


# --------------------------------------------------------------------------- EVD metric

SH1, SH2 = (120, 160), (130, 150)
H_GT = np.array([[0.9, 0.12, 25.0], [-0.08, 1.05, -18.0], [4e-4, -2e-4, 1.0]])  # image 1 -> 2, part out of view


def _h_cases():
    rng = np.random.default_rng(3)
    shift = np.array([[0, 0, 1.5], [0, 0, -0.8], [0, 0, 0]])
    return {"gt": H_GT, "perturbed": H_GT + np.diag([0.01, -0.01, 0]) + shift,
            "noisy": H_GT * (1 + rng.normal(0, 0.01, (3, 3))), "wrong": np.array([[1.0, 0, 60], [0, 1, 5], [0, 0, 1]]),
            "identity": np.eye(3)}


H_CASES = _h_cases()


@pytest.mark.parametrize("case", sorted(H_CASES))
def test_h_error_matches_reference(case, ref):
    H = H_CASES[case]
    expected = ref.get_visible_part_mean_absolute_reprojection_error(SH1, SH2, H_GT, H)
    assert wb.evd_reprojection_error(SH1, SH2, H_GT, H) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # colour image shapes (h, w, 3) are fine here (the reference needs (h, w))
    assert wb.evd_reprojection_error(SH1 + (3,), SH2 + (3,), H_GT, H) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_h_error_uses_the_visible_part_and_is_not_trivial(ref):
    errs = {c: wb.evd_reprojection_error(SH1, SH2, H_GT, H) for c, H in H_CASES.items()}
    assert errs["gt"] == 0.0 and 0.5 < errs["perturbed"] < 5 and errs["wrong"] > 30
    # a fully visible pair (pure shift within a larger image 2) differs from the partly visible one
    shift = np.array([[1.0, 0, 3], [0, 1, 2], [0, 0, 1]])
    big = (400, 400)
    assert ref.get_visible_part_mean_absolute_reprojection_error(SH1, big, shift, np.eye(3)) == pytest.approx(
        wb.evd_reprojection_error(SH1, big, shift, None)) == pytest.approx(np.hypot(3, 2), rel=1e-6)


def test_failed_h_is_scored_as_identity_and_nan_as_inf(ref):
    expected = ref.get_visible_part_mean_absolute_reprojection_error(SH1, SH2, H_GT, np.eye(3))
    assert wb.evd_reprojection_error(SH1, SH2, H_GT, None) == pytest.approx(expected, rel=1e-12)
    bad = H_CASES["perturbed"].copy()
    bad[0, 0] = np.nan
    with np.errstate(all="ignore"):
        assert np.isnan(ref.get_visible_part_mean_absolute_reprojection_error(SH1, SH2, H_GT, bad))
    assert wb.evd_reprojection_error(SH1, SH2, H_GT, bad) == np.inf
    assert wb.evd_accuracy([np.inf, 0.0]).tolist() == list(ref.get_mAA(np.array([np.nan, 0.0])))


def test_evd_accuracy_maa_and_count_match_reference(ref):
    ths = wb.EVD_THRESHOLDS
    np.testing.assert_array_equal(ths, np.logspace(np.log2(1.0), np.log2(20), 10, base=2.0))
    assert ths[0] == pytest.approx(1.0) and ths[-1] == pytest.approx(20.0) and len(ths) == 10
    # errors on the thresholds themselves (<= counts them), between them, beyond them
    errors = np.r_[ths[[0, 3, 6, 9]], 0.0, 0.3, 1.2, 4.0, 9.99, 10.0, 10.01, 19.9, 25.0, 150.0, np.inf]
    curve = wb.evd_accuracy(errors)
    np.testing.assert_allclose(curve, np.asarray(ref.get_mAA(errors), np.float64), atol=1e-7)
    assert wb.evd_maa(errors) == pytest.approx(float(np.mean(ref.get_mAA(errors))), abs=1e-7)
    assert wb.evd_pairs_under(errors) == 9  # <= 10 px: 10.0 counts, 10.01 does not


# --------------------------------------------------------------------------- WxBS data (real val pairs)


@pytest.fixture(scope="module")
def wxbs_val(shared_dir) -> Path:
    """shared/data/wxbs-val: the two WxBS v1.1 validation pairs (skip if absent, fail under CI)."""
    return _need(shared_dir / "data" / "wxbs-val")


@pytest.fixture
def ref_dataset(monkeypatch):
    """The reference ``wxbs_benchmark.dataset``. It imports torchvision only to download, so
    where torchvision is absent a stub stands in for this test (sys.modules restored after)."""
    _reference("wxbs_benchmark")
    _reference("PIL")
    if importlib.util.find_spec("torchvision") is None:
        def no_download(*args, **kwargs):
            raise AssertionError("the test must not download")

        tv = types.ModuleType("torchvision")
        tv.datasets = types.SimpleNamespace(phototour=types.SimpleNamespace(download_url=no_download))
        monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.delitem(sys.modules, "wxbs_benchmark.dataset", raising=False)
    return importlib.import_module("wxbs_benchmark.dataset")


def test_wxbs_val_pairs_listed_and_read(wxbs_val):
    pairs = wb.list_wxbs_pairs(wxbs_val)
    assert [p.pair_id for p in pairs] == ["WGABS/petrzin", "WGALBS/kyiv_dolltheater2"]
    assert {p.subset for p in pairs} == {"val"} and wb.list_wxbs_pairs(wxbs_val, "test") == []
    assert wb.list_wxbs_pairs(wxbs_val, "val") == pairs == wb.list_wxbs_pairs(wxbs_val / "v1.1")
    assert [p.img1.name for p in pairs] == ["01.png", "01.jpg"]
    for p, n in zip(pairs, (38, 50)):
        c = wb.read_wxbs_corrs(p.corrs)
        assert c.shape == (n, 4) and c.dtype == np.float64
        np.testing.assert_array_equal(c, np.loadtxt(p.corrs))
        h1, w1 = wb.image_shape(p.img1)
        h2, w2 = wb.image_shape(p.img2)
        assert c[:, 0].max() < w1 and c[:, 1].max() < h1 and c[:, 2].max() < w2 and c[:, 3].max() < h2
        assert p.crossval_errors is not None and len(np.loadtxt(p.crossval_errors)) == n


def test_wxbs_val_pairs_agree_with_reference_dataset(wxbs_val, ref_dataset):
    dset = ref_dataset.WxBSDataset(str(wxbs_val), subset="val", download=False)
    ours = wb.list_wxbs_pairs(wxbs_val, "val")
    assert [Path(x[0]) for x in dset.pairs] == [p.img1 for p in ours]
    assert [Path(x[2]) for x in dset.pairs] == [p.corrs for p in ours]
    assert len(ref_dataset.WxBSDataset(str(wxbs_val), subset="test", download=False)) == 0
    item = dset[0]
    assert item["name"] == ours[0].pair_id
    np.testing.assert_array_equal(item["pts"], wb.read_wxbs_corrs(ours[0].corrs))
    assert item["img1"].shape[:2] == wb.image_shape(ours[0].img1)
    np.testing.assert_array_equal(item["img1"], wb.read_image(ours[0].img1))  # PNG: RGB, bit-exact


def test_wxbs_val_metric_end_to_end(wxbs_val, ref):
    """F from the GT corrs (8-point, and MAGSAC++) scores high, identically to the reference."""
    for p in wb.list_wxbs_pairs(wxbs_val):
        c = wb.read_wxbs_corrs(p.corrs)
        F8, _ = cv2.findFundamentalMat(c[:, :2], c[:, 2:], cv2.FM_8POINT)
        Fm = wb.estimate_fundamental_magsac(c[:, :2], c[:, 2:])
        for F in (F8, Fm):
            np.testing.assert_allclose(wb.wxbs_recall(F, c), _ref_recall(ref, F, c), atol=1e-6)
            assert wb.wxbs_maa(F, c) > 0.85


# --------------------------------------------------------------------------- WxBS / EVD layout errors


def _one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


def _pair_dir(root: Path, group: str, name: str, images=("01.png", "02.png"), corrs="1 2 3 4\n5 6 7 8\n") -> Path:
    d = root / "v1.1" / group / name
    d.mkdir(parents=True)
    for im in images:
        cv2.imwrite(str(d / im), np.zeros((8, 8), np.uint8))
    if corrs is not None:
        (d / "corrs.txt").write_text(corrs)
    return d


def test_wxbs_listing_subsets_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        wb.list_wxbs_pairs(tmp_path / "nowhere")
    _one_line(e, str(tmp_path / "nowhere" / "v1.1"))
    (tmp_path / "v1.1").mkdir()
    with pytest.raises(ValueError) as e:
        wb.list_wxbs_pairs(tmp_path)
    _one_line(e, "no WxBS pair")
    _pair_dir(tmp_path, "WGBS", "kn-church")
    _pair_dir(tmp_path, "WGABS", "petrzin", images=("01.jpg", "02.jpg"))
    (tmp_path / "v1.1" / "README.txt").write_text("x")
    (tmp_path / "v1.1" / ".DS_Store").mkdir()
    pairs = wb.list_wxbs_pairs(tmp_path)
    assert [(p.pair_id, p.subset) for p in pairs] == [("WGABS/petrzin", "val"), ("WGBS/kn-church", "test")]
    assert [p.pair_id for p in wb.list_wxbs_pairs(tmp_path, "test")] == ["WGBS/kn-church"]
    with pytest.raises(ValueError) as e:
        wb.list_wxbs_pairs(tmp_path, "train")
    _one_line(e, "'train'")
    bad = _pair_dir(tmp_path, "WLABS", "noimage", images=("01.png",))
    with pytest.raises(FileNotFoundError) as e:
        wb.list_wxbs_pairs(tmp_path)
    _one_line(e, "02.png", str(bad))
    (bad / "02.png").write_bytes((bad / "01.png").read_bytes())
    (bad / "corrs.txt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        wb.list_wxbs_pairs(tmp_path)
    _one_line(e, "corrs.txt", str(bad))


@pytest.mark.parametrize("text,line", [("1 2 3 4\n1 2 3\n", 2), ("1 2 3 4\n\n1 2 x 4\n", 3),
                                       ("1,2,3,4\n", 1), ("1 2 3 4 5\n", 1), ("1 2 nan 4\n", 1)])
def test_malformed_corrs_line_named(tmp_path, text, line):
    p = tmp_path / "corrs.txt"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        wb.read_wxbs_corrs(p)
    _one_line(e, f"{p}:{line}:")


def test_corrs_empty_missing_and_comments(tmp_path):
    p = tmp_path / "corrs.txt"
    p.write_text("# header\n\n")
    with pytest.raises(ValueError) as e:
        wb.read_wxbs_corrs(p)
    _one_line(e, "empty", str(p))
    with pytest.raises(FileNotFoundError) as e:
        wb.read_wxbs_corrs(tmp_path / "none.txt")
    _one_line(e, "none.txt")
    p.write_text("# x1 y1 x2 y2\n1 2 3 4\n  5.5\t6 7 8e1  \n")
    np.testing.assert_array_equal(wb.read_wxbs_corrs(p), [[1, 2, 3, 4], [5.5, 6, 7, 80]])


def _evd(root: Path, names=("adam", "cafe")) -> Path:
    d = root / "EVD"
    for sub in ("1", "2", "h"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        cv2.imwrite(str(d / "1" / f"{n}.png"), rng.integers(0, 255, (20 + i, 30, 3), np.uint8))
        cv2.imwrite(str(d / "2" / f"{n}.png"), rng.integers(0, 255, (25, 28 + i), np.uint8))
        H = 2.0 * np.array([[1.0, 0.1, 3 + i], [0.0, 0.9, -2], [1e-3, 0, 1]])
        (d / "h" / f"{n}.txt").write_text("\n".join("\t".join(f"{v:.6f}" for v in r) + " " for r in H) + "\n")
    return root


def test_evd_listing_and_homography_agree_with_reference(tmp_path, ref_dataset):
    root = _evd(tmp_path)
    pairs = wb.list_evd_pairs(root)
    assert [p.name for p in pairs] == ["adam", "cafe"] and wb.list_evd_pairs(root / "EVD") == pairs
    dset = ref_dataset.EVDDataset(str(root), download=False)
    assert len(dset) == 2
    for i, p in enumerate(pairs):
        item = dset[i]
        H = wb.read_evd_homography(p.homography)
        assert item["name"] == p.name and H[2, 2] == 1.0
        np.testing.assert_allclose(H, item["H"], rtol=1e-15)
        assert item["img1_shape"] == wb.image_shape(p.img1) and item["img2_shape"] == wb.image_shape(p.img2)


def test_evd_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        wb.list_evd_pairs(tmp_path)
    _one_line(e, str(tmp_path / "EVD"))
    root = _evd(tmp_path / "a")
    (root / "EVD" / "h" / "cafe.txt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        wb.list_evd_pairs(root)
    _one_line(e, "cafe.txt")
    root = _evd(tmp_path / "b")
    (root / "EVD" / "2" / "adam.png").unlink()
    with pytest.raises(FileNotFoundError) as e:
        wb.list_evd_pairs(root)
    _one_line(e, str(root / "EVD" / "2" / "adam.png"))
    h = tmp_path / "h.txt"
    for text, part in [("1 0 0\n0 1\n0 0 1\n", f"{h}:2:"), ("1 0 0\n0 1 0\n", "2 rows"),
                       ("1 0 0\n0 1 0\n0 0 0\n", "H[2,2] = 0"), ("1 0 0\n0 a 0\n0 0 1\n", f"{h}:2:")]:
        h.write_text(text)
        with pytest.raises(ValueError) as e:
            wb.read_evd_homography(h)
        _one_line(e, part)


def test_metric_input_errors():
    _, corrs = F_CASES["gt"]
    for call, part in [(lambda: wb.wxbs_recall(np.eye(4), corrs), "3x3"),
                       (lambda: wb.wxbs_recall(np.eye(3), corrs[:, :3]), "(N>0, 4)"),
                       (lambda: wb.wxbs_recall(np.eye(3), np.zeros((0, 4))), "(N>0, 4)"),
                       (lambda: wb.evd_reprojection_error(SH1, SH2, H_GT, np.ones(9)), "H must be 3x3"),
                       (lambda: wb.evd_accuracy([]), "no EVD errors"),
                       (lambda: wb.estimate_fundamental_magsac(np.zeros((9, 2)), np.zeros((8, 2))), "differ"),
                       (lambda: wb.estimate_homography_magsac(np.zeros((9, 3)), np.zeros((9, 3))), "(N, 2)")]:
        with pytest.raises(ValueError) as e:
            call()
        _one_line(e, part)


# --------------------------------------------------------------------------- MAGSAC++


def test_magsac_fundamental_and_homography():
    F, corrs, rng = _two_view(seed=11, n=300, noise=0.3)
    pts1, pts2 = corrs[:, :2].copy(), corrs[:, 2:].copy()
    pts2[:60] = rng.uniform(0, 800, (60, 2))  # 20 % outliers
    Fe = wb.estimate_fundamental_magsac(pts1, pts2)
    assert Fe is not None and Fe.shape == (3, 3)
    assert wb.wxbs_recall(Fe, corrs[60:])[2] > 0.9
    assert np.array_equal(Fe, wb.estimate_fundamental_magsac(pts1, pts2))  # deterministic
    assert wb.estimate_fundamental_magsac(pts1[:7], pts2[:7]) is None
    assert wb.estimate_fundamental_magsac(np.ones((20, 2)), np.ones((20, 2))) is None  # degenerate

    src = rng.uniform(0, 150, (200, 2))
    dst = cv2.perspectiveTransform(src[:, None], H_GT)[:, 0] + rng.normal(0, 0.2, (200, 2))
    dst[:40] = rng.uniform(0, 150, (40, 2))
    He = wb.estimate_homography_magsac(src, dst)
    assert He is not None and He[2, 2] == pytest.approx(1.0)
    assert wb.evd_reprojection_error(SH1, SH2, H_GT, He) < 0.5
    assert wb.estimate_homography_magsac(src[:3], dst[:3]) is None
    assert wb.estimate_homography_magsac(np.ones((10, 2)), np.ones((10, 2))) is None


# --------------------------------------------------------------------------- synthetic extreme pairs

H_1_3 = np.array([[0.95, 0.08, 6.0], [-0.06, 1.02, 4.0], [1.5e-4, -1e-4, 1.0]])


def _unit(direction_deg: float) -> tuple:
    a = np.radians(direction_deg)
    d = np.array([np.cos(a), np.sin(a)])
    return d, np.array([-d[1], d[0]])


def _blobs(direction_deg: float) -> np.ndarray:
    """Six points of image 1 in two rows across the squeeze: 90 px apart along it, 60 across."""
    d, n = _unit(direction_deg)
    return np.array([[115.0, 95.0] + a * d + s * n for a in (-45, 45) for s in (-60, 0, 60)])


def _blob_sequence(root: Path, direction_deg: float = 0.0) -> Path:
    """An HPatches-layout folder (1.ppm, 3.ppm, H_1_3): white Gaussian blobs, image 3 = image 1 warped."""
    d = root / "v_blobs"
    d.mkdir()
    yy, xx = np.mgrid[0:190, 0:230].astype(np.float64)
    img = np.zeros((190, 230))
    for x, y in _blobs(direction_deg):
        img += 250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2))
    img1 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    img3 = cv2.warpPerspective(img1, H_1_3, (220, 200), flags=cv2.INTER_LINEAR)
    cv2.imwrite(str(d / "1.ppm"), cv2.merge([img1] * 3))
    cv2.imwrite(str(d / "3.ppm"), cv2.merge([img3] * 3))
    (d / "H_1_3").write_text("\n".join(" ".join(f"{v:.10g}" for v in r) for r in H_1_3) + "\n")
    return d


def _centroid(img: np.ndarray, at: np.ndarray, direction_deg: float) -> np.ndarray:
    """Intensity centroid within a box around ``at``: 6 px along the squeeze, 14 px across it."""
    d, n = _unit(direction_deg)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float64)
    along, across = (xx - at[0]) * d[0] + (yy - at[1]) * d[1], (xx - at[0]) * n[0] + (yy - at[1]) * n[1]
    w = np.where((np.abs(along) <= 6) & (np.abs(across) <= 14), img.astype(np.float64), 0.0)
    w = np.where(w > 0.1 * w.max(), w, 0.0)
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


@pytest.mark.parametrize("tilt,direction", [(4, 0.0), (6, 90.0), (8, 30.0), (6, 135.0)])
def test_extreme_pair_homography_points_where_the_warp_shows_them(tmp_path, tilt, direction):
    seq = _blob_sequence(tmp_path, direction)
    pair = wb.make_extreme_pair(seq, k=3, tilt=tilt, direction_deg=direction)
    assert pair.name == f"v_blobs_1_3_t{tilt:g}_d{direction:g}" and pair.img1.shape == (190, 230, 3)
    h2, w2 = pair.img2.shape[:2]
    # the canvas just holds the tilted image 3: its corners land inside, touching the edges
    M = pair.H @ np.linalg.inv(H_1_3)
    corners = cv2.perspectiveTransform(np.array([[[0, 0]], [[219, 0]], [[219, 199]], [[0, 199]]], np.float64), M)[:, 0]
    assert (corners.min(axis=0) >= -1e-9).all() and (corners.min(axis=0) < 1.0).all()
    top = corners.max(axis=0)
    assert (top <= [w2 - 1 + 1e-9, h2 - 1 + 1e-9]).all() and (top > [w2 - 2, h2 - 2]).all()
    assert np.linalg.det(M[:2, :2] / M[2, 2]) == pytest.approx(1.0 / tilt)  # squeezed by the tilt
    if direction == 0.0:
        assert (h2, w2) == (200, int(np.ceil(219 / tilt)) + 1)
    # every blob of image 1 appears in img2 where H maps it
    blobs = _blobs(direction)
    pred = cv2.perspectiveTransform(blobs[:, None], pair.H)[:, 0]
    for p in pred:
        assert np.linalg.norm(_centroid(pair.img2[..., 0], p, direction) - p) < 0.2  # measured <= 0.11
    # H_1_3 alone (no tilt, no canvas shift) would put them elsewhere
    assert np.abs(cv2.perspectiveTransform(blobs[:, None], H_1_3)[:, 0] - pred).max() > 20
    again = wb.make_extreme_pair(seq, k=3, tilt=tilt, direction_deg=direction)
    assert np.array_equal(again.img2, pair.img2) and np.array_equal(again.H, pair.H)  # deterministic


def test_extreme_pair_without_antialias_and_tilt_matrix(tmp_path):
    seq = _blob_sequence(tmp_path)
    pair = wb.make_extreme_pair(seq, k=3, tilt=4, antialias=False)
    pred = cv2.perspectiveTransform(_blobs(0.0)[:, None], pair.H)[:, 0]
    for p in pred:
        assert np.linalg.norm(_centroid(pair.img2[..., 0], p, 0.0) - p) < 0.2
    A = wb.tilt_matrix(4.0, 90.0)
    np.testing.assert_allclose(A, np.diag([1.0, 0.25, 1.0]), atol=1e-15)
    d, n = _unit(30.0)
    A = wb.tilt_matrix(8.0, 30.0)[:2, :2]
    np.testing.assert_allclose(A @ d, d / 8)
    np.testing.assert_allclose(A @ n, n)


def test_extreme_pair_errors(tmp_path):
    seq = _blob_sequence(tmp_path)
    for kwargs, exc, part in [({"k": 7}, ValueError, "k must"), ({"tilt": 0.5}, ValueError, "tilt must"),
                              ({"k": 2}, FileNotFoundError, "2.ppm")]:
        with pytest.raises(exc) as e:
            wb.make_extreme_pair(seq, **kwargs)
        _one_line(e, part)
    with pytest.raises(FileNotFoundError) as e:
        wb.make_extreme_pair(tmp_path / "nope")
    _one_line(e, "nope")
    (seq / "H_1_3").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError) as e:
        wb.make_extreme_pair(seq, k=3)
    _one_line(e, "H_1_3", "2 rows")


def test_extreme_pair_on_a_real_sequence(hseq_mini):
    pair = wb.make_extreme_pair(hseq_mini / "v_boat", k=2, tilt=4, direction_deg=60)
    g1 = cv2.cvtColor(pair.img1, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g2 = cv2.cvtColor(pair.img2, cv2.COLOR_RGB2GRAY).astype(np.float32)
    size = g2.shape[::-1]
    inside = (cv2.warpPerspective(np.ones_like(g1), pair.H, size) > 0.999) & (g2 > 0)
    assert inside.sum() > 50_000

    def ncc(H):
        a, b = cv2.warpPerspective(g1, H, size)[inside], g2[inside]
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    shifted = np.array([[1.0, 0, 4], [0, 1, 0], [0, 0, 1]]) @ pair.H
    assert ncc(pair.H) > 0.8 and ncc(pair.H) > ncc(shifted) + 0.2


# --------------------------------------------------------------------------- results


def _fake_rows():
    pairs = [wb.WxBSPair("WGABS", "petrzin", Path("a"), Path("b"), Path("c"), "val"),
             wb.WxBSPair("WGBS", "kn-church", Path("a"), Path("b"), Path("c"), "test"),
             wb.WxBSPair("WLABS", "dh", Path("a"), Path("b"), Path("c"), "test")]
    rows = []
    for m, Fc in (("keynet", ("gt", "perturbed", "wrong")), ("sift", ("wrong", None, "gt"))):
        for p, c in zip(pairs, Fc):
            rec = wb.wxbs_recall(F_CASES[c][0] if c else None, F_CASES["gt"][1])
            rows.append(wb.wxbs_row(m, p, rec))
    return rows


def test_wxbs_results_csv_and_summary(tmp_path):
    rows = _fake_rows()
    out = tmp_path / "res" / "wxbs.csv"
    out.parent.mkdir()
    out.write_text("old\n")
    csv_path, md_path = wb.write_results(out, rows, "wxbs")
    assert csv_path == out and md_path == out.with_suffix(".md")
    assert sorted(p.name for p in out.parent.iterdir()) == ["wxbs.csv", "wxbs.md"]  # no temp files left
    back = list(csv.DictReader(out.open()))
    assert len(back) == 6 and back[0]["pair"] == "WGABS/petrzin" and "recall@19px" in back[0]
    assert float(back[1]["mAA"]) == pytest.approx(rows[1]["mAA"])
    table = md_path.read_text()
    assert table == wb.wxbs_summary_table(back)  # the same from the rows read back
    lines = table.splitlines()
    k_val = rows[0]["mAA"]
    k_test = (rows[1]["mAA"] + rows[2]["mAA"]) / 2
    assert lines[2] == f"| keynet | {k_val:.3f} | 1 | {k_test:.3f} | 2 |"
    assert lines[3].startswith("| sift | ") and len(lines) == 4
    curves = wb.wxbs_mean_curves(rows, "test")
    assert set(curves) == {"keynet", "sift"}
    assert float(np.mean(curves["keynet"])) == pytest.approx(k_test)
    png = wb.plot_recall_curves(tmp_path / "res" / "wxbs.png", wb.WXBS_THRESHOLDS, curves, title="WxBS test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError) as e:
        wb.plot_recall_curves(tmp_path / "x.png", wb.WXBS_THRESHOLDS, {"m": [0.1, 0.2]})
    _one_line(e, "'m'")


def test_evd_results_summary_and_atomic_failure(tmp_path, ref):
    errs = {"keynet": [0.8, 3.0, 9.5, 40.0], "sift": [1.5, 12.0, np.inf, 10.0]}
    rows = [wb.evd_row(m, f"p{i}", e) for m, es in errs.items() for i, e in enumerate(es)]
    csv_path, md_path = wb.write_results(tmp_path / "evd.csv", rows, "evd")
    lines = md_path.read_text().splitlines()
    for m, line in zip(errs, lines[2:]):
        maa = float(np.mean(ref.get_mAA(np.array(errs[m]))))
        assert line == f"| {m} | {maa:.3f} | {wb.evd_pairs_under(errs[m])} / 4 |"
    assert lines[3].endswith("| 2 / 4 |")  # 1.5 and exactly 10.0
    back = list(csv.DictReader(csv_path.open()))
    assert back[6]["error_px"] == "inf" and wb.evd_summary_table(back) == md_path.read_text()
    np.testing.assert_allclose(wb.evd_curves(rows)["sift"], ref.get_mAA(np.array(errs["sift"])), atol=1e-7)
    before = csv_path.read_bytes()
    with pytest.raises(ValueError):
        wb.write_csv_atomic(csv_path, rows, fieldnames=["method"])  # rows have other keys
    assert csv_path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["evd.csv", "evd.md"]
    with pytest.raises(ValueError) as e:
        wb.write_results(tmp_path / "x.csv", rows, "hpatches")
    _one_line(e, "'hpatches'")


@pytest.mark.parametrize("affine", ["learned", "learned-imagenet"])
def test_the_cache_tag_names_each_shipped_affnet_by_its_own_file(affine, tmp_path, monkeypatch):
    """A shipped name is tagged by its file's digest, a path by that file's; a shipped file that is
    absent skips the method rather than failing the run."""
    import hardnet.weights as hw
    from HSequences_bench.harness.keynet_methods import MethodSkipped, pipeline_tag
    from keynet.base.files import file_digest
    from keynet.pipeline.config import FeatureConfig

    assert pipeline_tag(FeatureConfig(affine=affine)).endswith(f"affine={file_digest(hw.affine_file(affine))}")
    copy = tmp_path / "affnet_copy.pt"
    copy.write_bytes(hw.affine_file(affine).read_bytes())
    assert pipeline_tag(FeatureConfig(affine=str(copy))).endswith(f"affine={file_digest(copy)}")
    if affine == "learned":  # the shipped file gone
        monkeypatch.setattr(hw, "DEFAULT_AFFINE", tmp_path / "absent.pt")
    else:
        monkeypatch.setitem(hw.AFFINE_NAMES, affine, tmp_path / "absent.pt")
    with pytest.raises(MethodSkipped):
        pipeline_tag(FeatureConfig(affine=affine))
