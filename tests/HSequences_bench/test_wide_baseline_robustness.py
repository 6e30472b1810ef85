"""``keynet bench-wxbs`` on the inputs that used to stop it or mislead it
(HSequences_bench/harness/wide_baseline_*.py, keynet/commands/bench_wxbs.py):

* SIFT with the reference baseline's thresholds gives the keypoint count asked for;
* a pair without matches (or with fewer than the estimator's minimal sample) is a failed
  estimate, status ``no model``, never an exception;
* a WxBS / EVD folder lacking a file is one ``error:`` line (exit 2), or with
  ``--skip-incomplete`` a warning line per pair, the pair left out and listed in the report;
* the seconds of a pair of a method matching view levels one after another
  (``Method.match_pair`` -> ``MatchResult``, ``ImageFeatures.extra["level_seconds"]``) and
  their cache round trip.

Every data folder is made here from small generated images, except the SIFT count test,
which reads a real WxBS image of ../shared (skipped without it, failing under CI=true)."""
from __future__ import annotations

import contextlib
import csv
import io
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import _need  # the project's ../shared helper (skip, or fail under CI=true)
from HSequences_bench.harness import wide_baseline_methods as wm
from HSequences_bench.harness import wide_baseline_run as wr
from HSequences_bench.harness.wide_baseline_method import MatchResult, Method
from HSequences_bench import wide_baseline as wb
from keynet.commands import bench_wxbs
from keynet.pipeline.config import MatcherConfig

SMALL = ["--num-points", "300", "--max-image-size", "400", "--no-progress", "--no-plot"]
SHIFT = (7.0, 5.0)  # image 2 of a generated pair is image 1 moved by this many pixels (x, y)


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bench_wxbs.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def texture(seed: int, shape=(180, 240)) -> np.ndarray:
    """A blurred-noise grey image: plenty of SIFT keypoints."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shifted(img: np.ndarray) -> np.ndarray:
    M = np.array([[1, 0, SHIFT[0]], [0, 1, SHIFT[1]]], np.float64)
    return cv2.warpAffine(img, M, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


FLAT = np.full((180, 240), 128, np.uint8)  # no SIFT keypoint at all


def wxbs_pair(root: Path, name: str, img1: np.ndarray, img2: np.ndarray, group: str = "G") -> Path:
    d = root / "v1.1" / group / name
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "01.png"), img1)
    cv2.imwrite(str(d / "02.png"), img2)
    xy = np.array([[40, 30], [200, 40], [60, 150], [180, 140], [120, 90]], np.float64)
    np.savetxt(d / "corrs.txt", np.column_stack([xy, xy + SHIFT]))
    return d


def evd_pair(root: Path, name: str, img1: np.ndarray, img2: np.ndarray) -> Path:
    d = root / "EVD"
    for sub in ("1", "2", "h"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / "1" / f"{name}.png"), img1)
    cv2.imwrite(str(d / "2" / f"{name}.png"), img2)
    np.savetxt(d / "h" / f"{name}.txt", np.array([[1, 0, SHIFT[0]], [0, 1, SHIFT[1]], [0, 0, 1]], np.float64))
    return d


# ----------------------------------------------------------------------------- SIFT's count
@pytest.mark.parametrize("name", ["sift", "rootsift"])
def test_sift_gives_the_count_asked_for(shared_dir, name):
    """At 640 px, petrzin's image 1 has 4193 SIFT keypoints under OpenCV's default thresholds;
    with the reference baseline's (contrast -10000, edge 10000) it has the 5000 asked for."""
    img = _need(shared_dir / "data" / "wxbs-val" / "v1.1" / "WGABS" / "petrzin" / "01.png")
    n = 5000
    method = wm.build_method(name, wm.MethodOptions(num_points=n, max_image_size=640))
    assert "contrast=-10000 edge=10000" in method.tag and "contrast=-10000 edge=10000" in method.features_tag
    f = method.extract(img)
    assert 0.9 * n <= len(f.keypoints) <= n and f.descriptors.shape == (len(f.keypoints), 128)


def test_sift_settings_are_the_reference_baselines():
    assert wm.SIFT_THRESHOLDS == {"contrastThreshold": -10000.0, "edgeThreshold": 10000.0}
    plain = wm.build_method("sift", wm.MethodOptions(num_points=8000))
    assert "opencv=" in plain.tag and " n=8000 contrast=-10000 edge=10000 desc=l2" in plain.tag


# ----------------------------------------------------------------------------- no matches
class NoMatches(Method):
    """SIFT features, never a match."""

    def match(self, f1, f2):
        return np.zeros((0, 2), int)


class NoMatchesList(Method):
    """SIFT features, never a match, said as a plain empty list."""

    def match(self, f1, f2):
        return []


class FewMatches(Method):
    """SIFT features, the first ``k`` of SIFT's matches (fewer than a minimal sample)."""

    k = 3

    def match(self, f1, f2):
        return super().match(f1, f2)[:self.k]


def _toy(cls, family: str) -> Method:
    return cls(family, f"toy {family}", lambda: wm.SiftExtractor(300, False), MatcherConfig(), 400)


def test_estimators_take_no_matches():
    for empty in (np.zeros((0, 2)), np.zeros(0), []):
        assert wb.estimate_fundamental_magsac(empty, empty) is None
        assert wb.estimate_homography_magsac(empty, empty) is None
        assert wr.count_inliers_f(np.eye(3), np.zeros((0, 2)), np.zeros((0, 2)), 0.25) == 0
        assert wr.count_inliers_h(np.eye(3), np.zeros((0, 2)), np.zeros((0, 2)), 0.5) == 0
    with pytest.raises(ValueError, match="differ in length"):  # still an error: one side empty, not the other
        wb.estimate_fundamental_magsac(np.zeros((0, 2)), np.ones((9, 2)))


def test_no_matches_is_no_model_not_an_exception(tmp_path):
    """Zero matches (a method that gives none; SIFT on a pair with a featureless image) and
    fewer than the minimal sample: status 'no model', WxBS recall 0, EVD error of the identity
    (the reference README's stand-in for no H), no warning."""
    img = texture(1)
    wx, ev = tmp_path / "wx", tmp_path / "ev"
    wxbs_pair(wx, "textured", img, shifted(img))
    wxbs_pair(wx, "featureless", FLAT, shifted(img))
    evd_pair(ev, "textured", img, shifted(img))
    evd_pair(ev, "featureless", img, FLAT)
    cases = wr.wxbs_cases(wx)[0] + wr.evd_cases(ev)[0]
    store = wr.Store(tmp_path / "cache")
    sift = wm.build_method("sift", wm.MethodOptions(num_points=300, max_image_size=400))
    few = _toy(FewMatches, "few")
    rows, warnings = wr.run_cases(cases, [_toy(NoMatches, "none"), _toy(NoMatchesList, "none-list"), sift, few],
                                  store, progress=False)
    assert warnings == []
    got = {(r["method"], r["pair"]): r for r in rows}
    truth = {c.name: c.ground_truth() for c in cases if c.benchmark == "evd"}  # H_gt, shape1, shape2
    identity = {n: wb.evd_reprojection_error(g[1], g[2], g[0], None) for n, g in truth.items()}
    assert all(math.isfinite(e) and e > 1.0 for e in identity.values()), identity
    for pair in ("G/textured", "G/featureless", "textured", "featureless"):
        for name in ("none", "none-list"):
            r = got[name, pair]
            assert r["status"] == "no model" and r["matches"] == 0 and r["inliers"] == 0, r
            assert (r["mAA"] == 0.0) if "/" in pair else (r["error_px"] == identity[pair]), r
    for pair in ("G/featureless", "featureless"):  # SIFT finds no keypoint in the flat image
        r = got["sift", pair]
        assert r["status"] == "no model" and r["matches"] == 0 and min(r["keypoints1"], r["keypoints2"]) == 0, r
        assert (r["mAA"] == 0.0) if "/" in pair else (r["error_px"] == identity[pair]), r
    for pair in ("G/textured", "textured"):  # the same images with features: SIFT registers them
        assert got["sift", pair]["status"] == "ok", got["sift", pair]
    assert got["sift", "textured"]["error_px"] < 1.0 and got["sift", "G/textured"]["mAA"] > 0.5
    for pair in ("G/textured", "textured"):  # 3 matches: below both minimal samples
        r = got["few", pair]
        assert r["status"] == "no model" and r["matches"] == 3, r
        assert (r["mAA"] == 0.0) if "/" in pair else (r["error_px"] == identity[pair]), r
    # the cached empty matches read back alike
    again, _ = wr.run_cases(cases, [_toy(NoMatches, "none"), _toy(NoMatchesList, "none-list"), sift],
                            wr.Store(tmp_path / "cache"), progress=False)
    assert [r["status"] for r in again] == [r["status"] for r in rows if r["method"] != "few"]


def test_no_matches_through_the_command(tmp_path, monkeypatch):
    monkeypatch.setitem(wm.METHODS, "nomatch", lambda o: _toy(NoMatches, "nomatch"))
    img = texture(2)
    wxbs_pair(tmp_path / "wx", "p", img, shifted(img))
    rc, stdout, stderr = run_cli("--wxbs-dir", tmp_path / "wx", "--methods", "nomatch", "sift", *SMALL,
                                 "--out-dir", tmp_path / "out")
    assert rc == 0 and "warning" not in stderr, stderr
    rows = {r["method"]: r for r in read_csv(tmp_path / "out" / "wxbs.csv")}
    assert rows["nomatch"]["status"] == "no model" and float(rows["nomatch"]["mAA"]) == 0.0
    assert rows["sift"]["status"] == "ok"


# ----------------------------------------------------------------------------- incomplete pairs
def _incomplete_wxbs(root: Path) -> None:
    img = texture(3)
    wxbs_pair(root, "good", img, shifted(img))
    (wxbs_pair(root, "half", img, shifted(img)) / "02.png").unlink()


def _incomplete_evd(root: Path) -> None:
    img = texture(4)
    evd_pair(root, "good", img, shifted(img))
    evd_pair(root, "noh", img, shifted(img))
    evd_pair(root, "no2", img, shifted(img))
    (root / "EVD" / "h" / "noh.txt").unlink()
    (root / "EVD" / "2" / "no2.png").unlink()


@pytest.mark.parametrize("benchmark", ["wxbs", "evd"])
def test_an_incomplete_pair_is_one_error_line(tmp_path, benchmark):
    (_incomplete_wxbs if benchmark == "wxbs" else _incomplete_evd)(tmp_path / "data")
    rc, stdout, stderr = run_cli(f"--{benchmark}-dir", tmp_path / "data", "--methods", "sift", *SMALL,
                                 "--out-dir", tmp_path / "out")
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    if benchmark == "wxbs":
        assert "WxBS pair G/half lacks 02.png (or 02.jpg)" in lines[0], lines[0]
    else:  # the first of the two, by name; the other counted
        assert f"EVD pair no2 lacks {tmp_path / 'data' / 'EVD' / '2' / 'no2.png'}" in lines[0], lines[0]
        assert "(and 1 more)" in lines[0], lines[0]
    assert "--skip-incomplete" in lines[0]
    assert not (tmp_path / "out" / "cache").exists() or not any((tmp_path / "out" / "cache").rglob("*.npz"))


@pytest.mark.parametrize("benchmark", ["wxbs", "evd"])
def test_skip_incomplete_runs_the_rest(tmp_path, benchmark):
    (_incomplete_wxbs if benchmark == "wxbs" else _incomplete_evd)(tmp_path / "data")
    rc, stdout, stderr = run_cli(f"--{benchmark}-dir", tmp_path / "data", "--methods", "sift", "--skip-incomplete",
                                 *SMALL, "--out-dir", tmp_path / "out")
    assert rc == 0, stderr
    warns = [line for line in stderr.splitlines() if line.startswith("warning:")]
    skipped = ["G/half"] if benchmark == "wxbs" else ["no2", "noh"]
    assert len(warns) == len(skipped) and all(f"pair {p} lacks" in w for p, w in zip(skipped, warns)), stderr
    if benchmark == "evd":
        assert "noh.txt" in warns[1]
    rows = read_csv(tmp_path / "out" / f"{benchmark}.csv")
    assert [r["pair"] for r in rows] == ["G/good" if benchmark == "wxbs" else "good"]
    report = (tmp_path / "out" / "wide_baseline.md").read_text()
    assert f"Skipped {len(skipped)} incomplete pair(s)" in report
    assert all(f"pair {p} lacks" in report for p in skipped), report


def test_skip_incomplete_with_no_pair_left_is_an_error(tmp_path):
    img = texture(5)
    (wxbs_pair(tmp_path / "wx", "half", img, img) / "corrs.txt").unlink()
    rc, _, stderr = run_cli("--wxbs-dir", tmp_path / "wx", "--skip-incomplete", "--methods", "sift", *SMALL,
                            "--out-dir", tmp_path / "out")
    assert rc == 2 and stderr.strip().splitlines()[-1].startswith("error: no WxBS pair"), stderr
    assert "warning: skipping incomplete WxBS pair G/half lacks corrs.txt" in stderr


# ----------------------------------------------------------------------------- seconds per level
FEATURE_LEVEL_S = {"a": np.array([1.0, 2.0, 4.0]), "b": np.array([0.5, 0.25, 0.15])}


class Levels(Method):
    """A toy method of three view levels: fixed features whose ``extra["level_seconds"]``
    are :data:`FEATURE_LEVEL_S`, a pair answered from ``level`` with the matching seconds
    ``match_s`` (one entry per level tried)."""

    def __init__(self, level: int, match_s, per_level: bool = True) -> None:
        super().__init__("levels", f"toy levels {level} {match_s} {per_level}", lambda: None, MatcherConfig(), 0)
        self.level, self.match_s, self.per_level = level, tuple(match_s), per_level

    def extract(self, path):
        ls = FEATURE_LEVEL_S[Path(path).stem[0]]
        xy = np.stack(np.meshgrid(np.arange(10, 200, 20.0), np.arange(10, 150, 20.0)), -1).reshape(-1, 2)
        if Path(path).stem[0] == "b":
            xy = xy + SHIFT
        extra = {"level_seconds": ls} if self.per_level else {}
        return wm.ImageFeatures(xy, np.eye(len(xy), 8, dtype=np.float32), (240, 180), float(ls.sum()), extra)

    def match_pair(self, f1, f2):
        return MatchResult(np.column_stack([np.arange(len(f1.keypoints))] * 2), self.level, self.match_s)


def _evd_case(tmp_path: Path):
    img = texture(6)
    d = evd_pair(tmp_path / "ev", "a", img, shifted(img))
    (d / "2" / "a.png").rename(d / "2" / "b.png")  # the toy tells its images by the first letter
    case = wr.Case("evd", "a", "evd/a", "evd/1/a", "evd/2/b", d / "1" / "a.png", d / "2" / "b.png",
                   wb.EVDPair("a", d / "1" / "a.png", d / "2" / "b.png", d / "h" / "a.txt"))
    return case


@pytest.mark.parametrize("level,match_s,seconds,level_s", [
    (0, (0.1,), 1.6, "1.60"),  # stops at level 0: level 0's features only
    (1, (0.1, 0.2), 1.6 + 2.45, "1.60;2.45"),
    (2, (0.1, 0.2, 0.4), 1.6 + 2.45 + 4.55, "1.60;2.45;4.55"),
])
def test_seconds_of_the_levels_tried_and_their_cache(tmp_path, level, match_s, seconds, level_s):
    case = _evd_case(tmp_path)
    method = Levels(level, match_s)
    store = wr.Store(tmp_path / "cache")
    pm = store.matches(method, case)
    assert pm.level == level and pm.seconds == pytest.approx(seconds)
    assert wr.level_seconds_cell(pm.level_seconds) == level_s
    assert store.counts["matches"] == 1
    rows, warnings = wr.run_cases([case], [method], wr.Store(tmp_path / "cache"), progress=False)
    assert warnings == [] and rows[0]["level"] == level and rows[0]["level_s"] == level_s
    assert rows[0]["seconds"] == pytest.approx(seconds, abs=1e-3) and rows[0]["status"] == "ok"
    again = wr.Store(tmp_path / "cache")  # from the cache
    cached = again.matches(method, case)
    assert again.counts == {"features": 0, "features_reused": 0, "matches": 0, "matches_reused": 1}
    assert cached.level == level and np.array_equal(cached.level_seconds, pm.level_seconds)
    assert cached.seconds == pm.seconds and np.array_equal(cached.pts1, pm.pts1)
    table = wr.counts_table(rows)
    assert "| s / pair | level | RANSAC s |" in table and f"| {float(level):.2f} |" in table


def test_seconds_without_per_level_numbers(tmp_path):
    case = _evd_case(tmp_path)
    # the features give no per-level seconds: all of both images' features + all matching
    pm = wr.Store(None).matches(Levels(1, (0.1, 0.2), per_level=False), case)
    assert pm.seconds == pytest.approx(7.0 + 0.9 + 0.3) and pm.level == 1 and pm.level_seconds.size == 0
    # matching seconds not one per level tried: features of levels 0..1 + the whole matching, per level unknown
    pm = wr.Store(None).matches(Levels(1, (0.3,)), case)
    assert pm.seconds == pytest.approx(1.5 + 2.25 + 0.3) and pm.level_seconds.size == 0


def test_default_match_pair_and_an_old_cache_file(tmp_path):
    img = texture(7)
    wxbs_pair(tmp_path / "wx", "p", img, shifted(img))
    case = wr.wxbs_cases(tmp_path / "wx")[0][0]
    sift = wm.build_method("sift", wm.MethodOptions(num_points=300, max_image_size=400))
    f1, f2 = sift.extract(case.img1), sift.extract(case.img2)
    r = sift.match_pair(f1, f2)
    assert r.level == 0 and len(r.level_seconds) == 1 and r.level_seconds[0] >= 0
    assert np.array_equal(r.matches, sift.match(f1, f2))
    store = wr.Store(tmp_path / "cache")
    pm = store.matches(sift, case)
    assert pm.level == 0 and pm.level_seconds.size == 0  # plain features carry no per-level seconds
    path = tmp_path / "cache" / sift.cache_name / "matches" / f"{case.key}.npz"
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k not in ("level", "level_seconds", "match_level_seconds")}
    wr._save_npz(path, **old)  # a file written before the levels were kept
    cached = wr.Store(tmp_path / "cache").matches(sift, case)
    assert cached.level == 0 and cached.level_seconds.size == 0 and cached.seconds == pm.seconds
    rows, _ = wr.run_cases([case], [sift], wr.Store(tmp_path / "cache"), progress=False)
    assert rows[0]["level"] == 0 and rows[0]["level_s"] == ""
