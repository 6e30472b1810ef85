"""``keynet bench-wxbs`` end to end (HSequences_bench/harness/wide_baseline_*.py and
keynet/commands/bench_wxbs.py): the two real WxBS validation pairs of ../shared and two
synthetic extreme pairs of v_graffiti with keynet-upright and sift at 500 points / 640 px,
the files and tables it writes, the cache reused by a second run, a ``keynet:`` method spec,
one-line errors (exit 2), a method skipped when its default weights are absent and a bad
pair that is a warning and a failed score."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import _need  # the project's ../shared helper (skip, or fail under CI=true)
from HSequences_bench.harness import wide_baseline_methods as wm
from keynet.commands import bench_wxbs

SMALL = ["--num-points", "500", "--max-image-size", "640", "--no-progress"]


def run_cli(*argv: str):
    """``keynet bench-wxbs argv`` in this process: ``(exit code, stdout, stderr, seconds)``."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = bench_wxbs.main([str(a) for a in argv])
        except SystemExit as e:  # a value an option's type refuses (argparse)
            rc = e.code
    return rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def wxbs_dir(shared_dir) -> Path:
    return _need(shared_dir / "data" / "wxbs-val")


@pytest.fixture(scope="module")
def graffiti(hseq_mini) -> Path:
    return _need(hseq_mini / "v_graffiti")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, wxbs_dir, graffiti):
    out = tmp_path_factory.mktemp("wxbs") / "out"
    argv = ["--wxbs-dir", wxbs_dir, "--synthetic-dir", graffiti, "--synthetic-k", "2", "--synthetic-tilts", "2", "4",
            "--methods", "keynet-upright", "sift", *SMALL, "--out-dir", out]
    rc, stdout, stderr, seconds = run_cli(*argv)
    assert rc == 0, stderr
    return {"out": out, "argv": argv, "stdout": stdout, "seconds": seconds}


def _cache_files(out: Path):
    return {p: p.stat().st_mtime_ns for p in sorted((out / "cache").rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_end_to_end_files_and_tables(first_run):
    out = first_run["out"]
    for name in ("wxbs.csv", "wxbs.md", "synthetic.csv", "synthetic.md", "wide_baseline.md", "wxbs_recall_val.png",
                 "synthetic_recall.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    wx = read_csv(out / "wxbs.csv")
    assert [(r["method"], r["pair"]) for r in wx] == [
        ("keynet-upright", "WGABS/petrzin"), ("sift", "WGABS/petrzin"),
        ("keynet-upright", "WGALBS/kyiv_dolltheater2"), ("sift", "WGALBS/kyiv_dolltheater2")]
    for r in wx:
        assert r["subset"] == "val" and 0.0 <= float(r["mAA"]) <= 0.95 and r["status"] in ("ok", "no model")
        assert 0 < int(r["keypoints1"]) <= 500 and 0 < int(r["keypoints2"]) <= 500
        assert 0 <= int(r["inliers"]) <= int(r["matches"]) and float(r["seconds"]) > 0
        recall = [float(r[f"recall@{t}px"]) for t in range(20)]
        assert np.all(np.diff(recall) >= 0) and np.isclose(np.mean(recall), float(r["mAA"]))
    syn = read_csv(out / "synthetic.csv")
    assert sorted({r["pair"] for r in syn}) == ["v_graffiti_1_2_t2_d0", "v_graffiti_1_2_t4_d0"]
    assert len(syn) == 4 and all(float(r["error_px"]) >= 0 for r in syn)
    assert {r["tilt"] for r in syn} == {"2.0", "4.0"}
    md = (out / "wide_baseline.md").read_text()
    assert "| keynet-upright | " in md and "| sift | " in md and "tentative matches" in md and "s / pair" in md
    assert "| val mAA | val pairs |" in md and "| mAA | pairs <= 10 px |" in md
    row = next(line for line in (out / "wxbs.md").read_text().splitlines() if line.startswith("| sift |"))
    assert row.split("|")[3].strip() == "2"  # two val pairs
    assert "Command: `keynet bench-wxbs" in md
    # per method: 4 WxBS images + 3 synthetic ones (image 1 shared by the two pairs)
    assert "14 image(s) extracted, 0 from the cache; 8 pair(s) matched" in first_run["stdout"]
    # the synthetic images are kept with their ground truth
    assert len(list((out / "cache" / "synthetic" / "v_graffiti").glob("*.png"))) == 2
    tags = sorted(p.parent.name for p in (out / "cache").glob("*/tag.txt"))
    # per method a folder of features and one of matches + estimates
    assert [t.split("-")[0] for t in tags] == ["keynet", "keynet", "sift", "sift"]
    assert sum("-features-" in t for t in tags) == 2
    for features in (out / "cache").glob("*-features-*"):
        assert {p.name for p in features.iterdir()} == {"tag.txt", "features"}
        assert "matcher=" not in (features / "tag.txt").read_text()


@pytest.mark.slow
def test_second_run_reuses_the_cache(first_run):
    out = first_run["out"]
    before = _cache_files(out)
    rows_before = read_csv(out / "wxbs.csv") + read_csv(out / "synthetic.csv")
    rc, stdout, stderr, seconds = run_cli(*first_run["argv"])
    assert rc == 0, stderr
    assert "0 image(s) extracted" in stdout and "0 pair(s) matched" in stdout
    assert _cache_files(out) == before  # nothing rewritten
    assert read_csv(out / "wxbs.csv") + read_csv(out / "synthetic.csv") == rows_before
    assert seconds < first_run["seconds"]


@pytest.mark.slow
def test_keynet_spec_of_the_upright_config_shares_its_cache(first_run, graffiti):
    """``keynet:orientation=none`` is keynet-upright's FeatureConfig: same tag, same cache."""
    out = first_run["out"]
    rc, stdout, stderr, _ = run_cli("--synthetic-dir", graffiti, "--synthetic-k", "2", "--synthetic-tilts", "2", "4",
                                    "--methods", "keynet:orientation=none", *SMALL, "--out-dir", out, "--no-plot")
    assert rc == 0, stderr
    assert "0 image(s) extracted" in stdout
    rows = read_csv(out / "synthetic.csv")
    assert {r["method"] for r in rows} == {"keynet:orientation=none"}
    assert "| keynet:orientation=none |" in (out / "synthetic.md").read_text()


@pytest.mark.slow
def test_another_matcher_reuses_the_features(first_run, graffiti, tmp_path):
    """Only the matching depends on ``--matcher``: the features come from the cache, the pairs
    are matched again into a folder of their own. Features in the older layout (inside the
    method's folder) are still read."""
    out = first_run["out"]
    before = _cache_files(out)
    pairs = ["--synthetic-dir", graffiti, "--synthetic-k", "2", "--synthetic-tilts", "2", "4", *SMALL, "--no-plot"]
    rc, stdout, stderr, _ = run_cli(*pairs, "--methods", "keynet-upright", "--matcher", "mnn", "--out-dir", out)
    assert rc == 0, stderr
    assert "0 image(s) extracted, 3 from the cache; 2 pair(s) matched" in stdout
    assert all(_cache_files(out).get(p) == t for p, t in before.items())  # nothing rewritten
    # the older layout: the features inside the folder of the method's matches
    old = tmp_path / "old"
    shutil.copytree(out / "cache" / "synthetic", old / "cache" / "synthetic")
    method = wm.build_method("keynet-upright", wm.MethodOptions(num_points=500, max_image_size=640))
    shutil.copytree(out / "cache" / method.features_cache_name / "features", old / "cache" / method.cache_name / "features")
    rc, stdout, stderr, _ = run_cli(*pairs, "--methods", "keynet-upright", "--out-dir", old)
    assert rc == 0, stderr
    assert "0 image(s) extracted, 3 from the cache; 2 pair(s) matched" in stdout


def test_keynet_spec_parsing_and_tags():
    spec = "keynet:subpixel=false,nms_size=9,rotation-turns=4,orientation=gradient"
    assert wm.parse_keynet_spec(spec) == {"subpixel": False, "nms_size": 9, "rotation_turns": 4,
                                          "orientation": "gradient"}
    assert wm.parse_keynet_spec("keynet:") == {}
    opts = wm.MethodOptions(num_points=500, max_image_size=640)
    upright = wm.build_method("keynet-upright", opts)
    same = wm.build_method("keynet:orientation=none", opts)
    other = wm.build_method("keynet:subpixel=false", opts)
    assert upright.cache_name == same.cache_name != other.cache_name
    assert (upright.name, same.name, other.name) == ("keynet-upright", "keynet:orientation=none",
                                                     "keynet:subpixel=false")
    assert not upright.loaded  # building a method loads no network
    # a new FeatureConfig field is one registry line; an unknown field is one clear error
    factory = wm.keynet_preset(orientation="gradient")
    assert factory(opts).tag == wm.build_method("keynet:orientation=gradient", opts).tag
    with pytest.raises(wm.MethodError, match="unknown FeatureConfig field 'frobnicate'"):
        wm.keynet_preset(frobnicate="yes")(opts)
    for bad, msg in (("keynet:bogus=1", "unknown FeatureConfig field 'bogus'"),
                     ("keynet:subpixel=maybe", "bad value 'maybe'"), ("keynet:nms_size", "not <field>=<value>"),
                     ("keynet:view_synthesis=some", "bad value 'some' for 'view_synthesis'")):
        with pytest.raises(wm.MethodError, match=msg):
            wm.parse_keynet_spec(bad)


def test_keynet_spec_with_view_synthesis_is_the_view_method():
    """``view_synthesis`` (a matcher setting) in a spec gives the view-synthesis method of those
    FeatureConfig fields: ``keynet:view_synthesis=auto`` is keynet-views (same cache); ``none`` is
    the plain pipeline."""
    opts = wm.MethodOptions(num_points=500, max_image_size=640)
    views = wm.build_method("keynet-views", opts)
    same = wm.build_method("keynet:view_synthesis=auto", opts)
    assert isinstance(same, wm.ViewSynthesisMethod) and same.cache_name == views.cache_name
    affine = wm.build_method("keynet:affine=moments,view_synthesis=full", opts)
    assert isinstance(affine, wm.ViewSynthesisMethod) and affine.matcher.view_synthesis == "full"
    assert '"affine": "moments"' in affine.tag and affine.cache_name != views.cache_name
    tentative = wm.build_method("keynet:view_synthesis=auto,view_matches=tentative", opts)
    assert tentative.tentative and not views.tentative and tentative.cache_name != views.cache_name
    # every view level is extracted whatever the mode and the matches given: one folder of features
    full = wm.build_method("keynet:view_synthesis=full", opts)
    assert full.cache_name != views.cache_name
    assert tentative.features_cache_name == views.features_cache_name == full.features_cache_name
    assert affine.features_cache_name != views.features_cache_name
    assert views.features_cache_name != wm.build_method("keynet-upright", opts).features_cache_name
    # auto's stopping count: a matcher setting (the same features); the default keeps the tag
    more = wm.build_method("keynet:view_synthesis=auto,min_inliers=40", opts)
    assert more.matcher.min_inliers == 40 and views.matcher.min_inliers == 15
    assert more.cache_name != views.cache_name and more.features_cache_name == views.features_cache_name
    assert wm.build_method("keynet:view_synthesis=auto,min_inliers=15", opts).cache_name == views.cache_name
    for bad, msg in (("keynet:view_matches=tentative", "needs view_synthesis=auto|full"),
                     ("keynet:view_synthesis=auto,view_matches=all", "bad value 'all' for 'view_matches'"),
                     ("keynet:min_inliers=30", "needs view_synthesis=auto"),
                     ("keynet:view_synthesis=full,min_inliers=30", "needs view_synthesis=auto"),
                     ("keynet:view_synthesis=auto,min_inliers=0", "a positive integer"),
                     ("keynet:view_synthesis=auto,min_inliers=many", "bad value 'many' for field 'min_inliers'")):
        with pytest.raises(wm.MethodError, match=msg):
            wm.parse_keynet_spec(bad)
    plain = wm.build_method("keynet:view_synthesis=none,orientation=none", opts)
    assert not isinstance(plain, wm.ViewSynthesisMethod)
    assert plain.cache_name == wm.build_method("keynet-upright", opts).cache_name


@pytest.mark.parametrize("argv,message", [
    ([], "give at least one of --wxbs-dir"),
    (["--wxbs-dir", "{tmp}/nowhere"], "WxBS data not found"),
    (["--evd-dir", "{tmp}/nowhere"], "EVD data not found"),
    (["--synthetic-dir", "{tmp}/nowhere"], "synthetic sequence folder not found"),
    (["--synthetic-dir", "{graffiti}", "--synthetic-k", "7"], "synthetic k must be image indices 2..6"),
    (["--synthetic-dir", "{graffiti}", "--methods", "surf"], "unknown method 'surf'"),
    (["--synthetic-dir", "{graffiti}", "--methods", "keynet:bogus=1"], "unknown FeatureConfig field 'bogus'"),
    (["--synthetic-dir", "{graffiti}", "--methods", "keynet:nms_size=big"], "bad value 'big'"),
    (["--synthetic-dir", "{graffiti}", "--methods", "kornia-affnet", "--peer-affnet", "{tmp}/AffNet.pth"],
     "--peer-affnet: file not found"),
    (["--synthetic-dir", "{graffiti}", "--num-points", "0"], "argument --num-points: expected a positive integer"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, graffiti, argv, message):
    argv = [a.format(tmp=tmp_path, graffiti=graffiti) for a in argv]
    rc, stdout, stderr, seconds = run_cli(*argv, "--out-dir", tmp_path / "out", "--no-progress")
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert not (tmp_path / "out" / "cache").exists() or not any((tmp_path / "out" / "cache").rglob("*.npz"))


def test_method_with_missing_default_weights_is_skipped(tmp_path, graffiti, monkeypatch):
    monkeypatch.setenv("KEYNET_SHARED", str(tmp_path / "no-shared"))
    rc, stdout, stderr, _ = run_cli("--synthetic-dir", graffiti, "--synthetic-k", "2", "--synthetic-tilts", "2",
                                    "--methods", "sift", "kornia-keynet-affnet-hardnet", *SMALL,
                                    "--out-dir", tmp_path / "out", "--no-plot")
    assert rc == 0, stderr
    note = [line for line in stdout.splitlines() if line.startswith("note: skipping 'kornia-keynet-affnet-hardnet'")]
    assert len(note) == 1 and "--peer-keynet" in note[0], stdout
    assert {r["method"] for r in read_csv(tmp_path / "out" / "synthetic.csv")} == {"sift"}
    rc, _, stderr, _ = run_cli("--synthetic-dir", graffiti, "--methods", "kornia-orinet", *SMALL,
                               "--out-dir", tmp_path / "out")
    assert rc == 2 and stderr.strip() == "error: no method left to run"


def test_a_bad_pair_is_a_warning_and_a_failed_score(tmp_path, wxbs_dir):
    src = wxbs_dir / "v1.1" / "WGABS" / "petrzin"
    root = tmp_path / "wx" / "v1.1" / "G"
    for name in ("good", "broken"):
        shutil.copytree(src, root / name)
    (root / "broken" / "02.png").write_bytes(b"not an image")
    rc, stdout, stderr, _ = run_cli("--wxbs-dir", tmp_path / "wx", "--methods", "sift", *SMALL,
                                    "--out-dir", tmp_path / "out")
    assert rc == 1
    warn = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "wxbs pair G/broken (sift)" in warn[0] and "02.png" in warn[0], stderr
    rows = {r["pair"]: r for r in read_csv(tmp_path / "out" / "wxbs.csv")}
    assert rows["G/broken"]["status"].startswith("failed") and float(rows["G/broken"]["mAA"]) == 0.0
    assert rows["G/good"]["status"] in ("ok", "no model")


@pytest.mark.slow
def test_kornia_methods_build_from_the_published_weights(reference_dir, graffiti):
    """The three kornia methods load the published files (never downloading) and give features."""
    for p in ("keynet_pt_official.pth", "peers/AffNet.pth", "peers/OriNet.pth"):
        _need(reference_dir / p)
    opts = wm.MethodOptions(num_points=64, max_image_size=192, peer_keynet=reference_dir / "keynet_pt_official.pth",
                            peer_affnet=reference_dir / "peers" / "AffNet.pth",
                            peer_orinet=reference_dir / "peers" / "OriNet.pth")
    for name in ("kornia-keynet-affnet-hardnet", "kornia-affnet", "kornia-orinet"):
        m = wm.build_method(name, opts)
        f = m.extract(graffiti / "1.ppm")
        assert 0 < len(f.keypoints) <= 64 and f.descriptors.shape == (len(f.keypoints), 128), name
        assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-3), name
        assert f.size == (800, 640) and f.keypoints[:, 0].max() > 192, name  # mapped back to full resolution


@pytest.mark.slow
def test_view_synthesis_method_caches_its_views_and_returns_verified_matches(tmp_path):
    """keynet-views: every view level per image (with the frames and view indices kept in the
    cache), matches that are the verified ones; an image against itself stops at level 0."""
    from HSequences_bench.harness.wide_baseline_run import Store
    from keynet.pipeline.views import view_levels
    img = Path(__file__).resolve().parents[2] / "test_im" / "test_im.png"
    method = wm.build_method("keynet-views", wm.MethodOptions(num_points=300, max_image_size=512))
    assert method.matcher.view_synthesis == "auto"
    store = Store(tmp_path / "cache")
    f = store.features(method, "a", img)
    assert {"lafs", "views", "orientations"} <= set(f.extra) and f.extra["lafs"].shape == (len(f.keypoints), 2, 3)
    assert set(view_levels(f.extra["views"])) == {0, 1, 2}
    again = Store(tmp_path / "cache").features(method, "a", img)  # from the cache
    assert np.array_equal(again.extra["views"], f.extra["views"]) and np.array_equal(again.keypoints, f.keypoints)
    m = method.match(f, f)
    assert len(m) >= 15 and np.all(view_levels(f.extra["views"])[m[:, 0]] == 0)  # level 0 was enough
    assert np.mean(m[:, 0] == m[:, 1]) > 0.9
    # view_matches=tentative: the same level's merged matches, not only the verified ones. Image 2
    # is image 1 with a third of its level-0 keypoints moved away: their matches stay tentative.
    moved = f.keypoints.copy()
    level0 = np.flatnonzero(view_levels(f.extra["views"]) == 0)
    rng = np.random.default_rng(0)
    moved[level0[::3], :2] = rng.uniform(0, 200, (len(level0[::3]), 2))
    f2 = dataclasses.replace(f, keypoints=moved)
    verified = method.match(f, f2)
    tentative = wm.build_method("keynet:view_synthesis=auto,view_matches=tentative",
                                wm.MethodOptions(num_points=300, max_image_size=512)).match(f, f2)
    assert len(verified) >= 15 and len(tentative) > len(verified) + 20
    assert {tuple(r) for r in verified} <= {tuple(r) for r in tentative}
    # a stopping count that level 0 cannot reach: auto goes on to the last level
    deep = wm.build_method("keynet:view_synthesis=auto,min_inliers=100000",
                           wm.MethodOptions(num_points=300, max_image_size=512)).match(f, f)
    assert view_levels(f.extra["views"])[deep[:, 0]].max() == 2
