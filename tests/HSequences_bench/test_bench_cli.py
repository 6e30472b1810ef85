"""Splits, image lists, feature-file checks and the hsequences_bench.py / keynet baselines
command lines on the mini sequences."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keynet.commands import baselines as extract_baselines
from keynet.commands import bench as hsequences_bench
from HSequences_bench import hsequences as hs
from HSequences_bench.features import FeatureFileError, load_descriptors, load_keypoints, pair_feature_paths

ROOT = Path(__file__).resolve().parents[2]
MINI = ["i_leuven", "v_boat", "v_graffiti", "v_wall"]


def test_splits_generated_from_tsv_match_committed_file(reference_dir, tmp_path):
    splits = hs.splits_from_tsv(reference_dir / "hpatches_sequences.tsv")
    assert len(splits["full"]) == 116 and len(splits["view"]) == 59 and len(splits["illum"]) == 57
    assert set(splits["view_test"]) < set(splits["view"]) and set(splits["illum_test"]) < set(splits["illum"])
    assert all(s.startswith("v_") for s in splits["view"]) and all(s.startswith("i_") for s in splits["illum"])
    assert len(splits["debug_view"]) == 5 and len(splits["debug_illum"]) == 5
    hs.write_splits(splits, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == (ROOT / "HSequences_bench" / "splits.json").read_text()
    assert hs.load_splits(tmp_path / "s.json") == splits
    lines = (ROOT / "HSequences_bench" / "HPatches_images.txt").read_text().split()
    assert lines == hs.image_list_lines(splits["full"]) and len(lines) == 696


def test_load_splits_both_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"view": {"test": ["v_a"], "name": "view"}}))
    (tmp_path / "b.json").write_text(json.dumps({"view": ["v_a", "v_b"]}))
    assert hs.get_split(tmp_path / "a.json", "view") == ["v_a"]
    assert hs.get_split(tmp_path / "b.json", "view") == ["v_a", "v_b"]
    with pytest.raises(hs.DatasetError, match="available: view"):
        hs.get_split(tmp_path / "b.json", "illum")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(hs.DatasetError, match="c.json"):
        hs.load_splits(tmp_path / "c.json")


def test_resolve_image_path():
    assert hs.resolve_image_path("hpatches-sequences-release/v_a/1.ppm") == Path("hpatches-sequences-release/v_a/1.ppm")
    assert hs.resolve_image_path("hpatches-sequences-release/v_a/1.ppm", "/data/hp") == Path("/data/hp/v_a/1.ppm")
    assert hs.resolve_image_path("v_a/1.ppm", "/data/hp") == Path("/data/hp/v_a/1.ppm")


def test_check_sequences_missing(hseq_mini):
    present, missing = hs.check_sequences(hseq_mini, MINI + ["v_nothere"], allow_missing=True)
    assert present == MINI and list(missing) == ["v_nothere"]
    with pytest.raises(hs.DatasetError, match="v_nothere.*--allow-missing"):
        hs.check_sequences(hseq_mini, MINI + ["v_nothere"])
    pairs = list(hs.sequence_pairs(hseq_mini, "v_wall"))
    assert [p.k for p in pairs] == [2, 3, 4, 5, 6]
    assert pairs[0].shape_src != pairs[0].shape_dst  # v_wall image 1 differs in size


def test_feature_file_checks(tmp_path):
    p = tmp_path / "a.kpt.npy"
    with pytest.raises(FeatureFileError, match="a.kpt.npy.*\n.*create it with: run me"):
        load_keypoints(p, hint="run me")
    np.save(p, np.zeros((0,)))
    assert load_keypoints(p).points.shape == (0, 4)
    np.save(p, np.array([[1.0, 2.0, 1.0, np.nan]]))
    with pytest.raises(FeatureFileError, match="a.kpt.npy has NaN/inf in 1 rows"):
        load_keypoints(p)
    np.save(p, np.ones((3, 3)))
    with pytest.raises(FeatureFileError, match=r"\(N, >=4\)"):
        load_keypoints(p)
    np.save(p, np.array([[1.0, 2.0, 3.0, 4.0, 9.0], [1.0, 2.0, 3.0, 5.0, 9.0], [7, 8, 1, 1, 0]], np.float32))
    k = load_keypoints(p, "yxsr")
    assert k.points.dtype == np.float32 and k.points[0].tolist() == [2, 1, 3, 4] and k.duplicates == 1
    d = tmp_path / "a.dsc.npy"
    np.save(d, np.ones((2, 8)))
    with pytest.raises(FeatureFileError, match="a.dsc.npy has 2 rows but its keypoint file has 3"):
        load_descriptors(d, 3)
    np.save(d, np.array([[1.0, np.inf]]))
    with pytest.raises(FeatureFileError, match="a.dsc.npy has NaN/inf"):
        load_descriptors(d, 1)


@pytest.fixture(scope="module")
def sift_features(hseq_mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat")
    lst = out / "list.txt"
    assert hs.main(["image-list", "--split", "full", "--data-dir", str(hseq_mini), "--out", str(lst)]) == 0
    assert len(lst.read_text().split()) == 24
    assert extract_baselines.main(["--method", "sift", "--list-images", str(lst), "--data-dir", str(hseq_mini),
                                   "--results-dir", str(out), "--num-points", "400", "--progress", "false"]) == 0
    return out


def _bench(args, capsys):
    code = hsequences_bench.main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_bench_end_to_end(sift_features, hseq_mini, tmp_path, capsys):
    res = sift_features
    # a keypoint-only detector: same keypoints, no descriptor files
    kp_only = res / "kponly" / "hpatches-sequences-release"
    shutil.copytree(res / "sift" / "hpatches-sequences-release", kp_only)
    for f in kp_only.rglob("*.dsc.npy"):
        f.unlink()
    out = tmp_path / "bench"
    code, text, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(res), "--split", "full",
                              "--allow-missing", "--detector-name", "sift", "kponly",
                              "--results-bench-dir", str(out)], capsys)
    assert code == 0, err
    assert "Overlap Single" in text and "no descriptors: matching n/a" in text and "skipped 112 sequences" in text
    with open(out / "sift_full.pickle", "rb") as f:
        r = pickle.load(f)
    for key in ("rep_single_scale", "rep_multi_scale", "match_score", "MMA", "num_features", "num_mutual_corresp"):
        assert len(r[key]) == 20
    assert r["detector"] == "sift" and r["overlap"] == 0.6
    # the original script's key names, with their original meaning
    assert r["mma"] == r["match_score"] and r["mma_corr"] == r["match_score_corr"] and r["avg_mma"] == r["MMA"]
    table = pd.read_csv(out / "summary_full.csv")
    assert set(table["detector"]) == {"sift", "kponly"} and set(table["subset"]) == {"all", "view", "illum"}
    row = table[(table.detector == "sift") & (table.subset == "all")].iloc[0]
    kp = table[(table.detector == "kponly") & (table.subset == "all")].iloc[0]
    assert row["rep_single"] == pytest.approx(kp["rep_single"]) and np.isnan(kp["MS@5"])
    assert row["rep_single"] == pytest.approx(np.mean(r["rep_single_scale"]))
    assert 0 < row["MS@5"] < 1 and 0 < row["MMA_D2@3"] <= 1
    assert (out / "mma_full.png").stat().st_size > 10000
    assert "n/a" in (out / "summary_full.md").read_text()
    seq = pd.read_csv(out / "per_sequence_full.csv")
    assert len(seq) == 8

    # the switches switch: destination frame, yxsr, pixel threshold, top-k none
    code, text2, _ = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(res), "--split", "view",
                             "--allow-missing", "--detector-name", "sift", "--results-bench-dir", str(out),
                             "--dst-to-src-evaluation", "false", "--top-k-points", "none", "--no-plot"], capsys)
    assert code == 0
    with open(out / "sift_view.pickle", "rb") as f:
        r2 = pickle.load(f)
    assert len(r2["rep_single_scale"]) == 15
    assert r2["rep_single_scale"] != [v for v, s in zip(r["rep_single_scale"], r["sequence"]) if s.startswith("v_")]


def test_bench_errors(sift_features, hseq_mini, tmp_path, capsys):
    code, _, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(sift_features), "--split", "full",
                           "--detector-name", "sift", "--results-bench-dir", str(tmp_path)], capsys)
    assert code == 2 and "--allow-missing" in err
    code, _, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(sift_features), "--split", "full",
                           "--allow-missing", "--detector-name", "orb", "--results-bench-dir", str(tmp_path)], capsys)
    assert code == 2 and "orb/hpatches-sequences-release/i_leuven/1.ppm.kpt.npy" in err
    assert "keynet baselines --method orb" in err
    # a descriptor file with the wrong number of rows is reported by name
    bad = tmp_path / "res"
    shutil.copytree(sift_features / "sift", bad / "sift")
    kpt, dsc = pair_feature_paths(bad, "sift", "v_boat", 3)
    np.save(dsc, np.load(dsc)[:-1])
    code, _, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(bad), "--split", "view",
                           "--allow-missing", "--detector-name", "sift", "--results-bench-dir", str(tmp_path)], capsys)
    assert code == 2 and "v_boat/3.ppm.dsc.npy has" in err
    with pytest.raises(SystemExit):
        hsequences_bench.build_parser().parse_args(["--dst-to-src-evaluation", "maybe"])
    a = hsequences_bench.build_parser().parse_args(["--dst-to-src-evaluation", "False", "--top-k-points", "all"])
    assert a.dst_to_src_evaluation is False and a.top_k_points is None
    for zero in ("0", "-3"):  # 0 never means "all" (nor does --num-points 0): rejected
        with pytest.raises(SystemExit):
            hsequences_bench.build_parser().parse_args(["--top-k-points", zero])


def test_split_all_evaluates_any_folder_names(hseq_mini, tmp_path, capsys):
    """A folder of one's own sequences (names outside HPatches, no v_/i_ prefix):
    --split all evaluates every one of them (an 'other' group); a named split says which
    sequences of the folder it leaves out."""
    data = tmp_path / "mine"
    data.mkdir()
    (data / "graf_copy").symlink_to(hseq_mini / "v_graffiti", target_is_directory=True)
    (data / "v_wall").symlink_to(hseq_mini / "v_wall", target_is_directory=True)
    assert hs.get_split(ROOT / "HSequences_bench" / "splits.json", "all", data) == ["graf_copy", "v_wall"]
    lines = hs.image_list_lines(["graf_copy", "v_wall"])
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    feats, bench = tmp_path / "feat", tmp_path / "bench"
    assert extract_baselines.main(["--method", "fast", "--list-images", str(tmp_path / "list.txt"), "--data-dir",
                                   str(data), "--results-dir", str(feats), "--num-points", "300",
                                   "--progress", "false"]) == 0
    common = ["--data-dir", str(data), "--results-dir", str(feats), "--detector-name", "fast",
              "--results-bench-dir", str(bench), "--no-plot"]
    assert hsequences_bench.main(common + ["--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "2 sequences, 10 pairs" in out and "[other: 5 pairs]" in out and "[view: 5 pairs]" in out
    table = pd.read_csv(bench / "summary_all.csv")
    assert set(table["subset"]) == {"all", "view", "other"}
    assert hsequences_bench.main(common + ["--split", "view", "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert "not in split 'view'" in out and "graf_copy" in out and "--split all" in out
