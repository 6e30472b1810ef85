"""Splits, image lists, feature-file checks and the hsequences_bench.py / keynet baselines
command lines on the mini sequences; the README's benchmark quick start and test
instructions."""
from __future__ import annotations

import json
import pickle
import re
import shlex
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from keynet.commands import baselines as extract_baselines
from keynet.commands import bench as hsequences_bench
from HSequences_bench import hsequences as hs
from HSequences_bench.features import FeatureFileError, extraction_hint, feature_layout
from HSequences_bench.features import load_descriptors, load_keypoints, pair_feature_paths
from keynet import cli as keynet_cli

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
    with pytest.raises(FeatureFileError, match="a.kpt.npy; create it with: run me$"):  # one line
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_errors(sift_features, hseq_mini, tmp_path, capsys):
    code, _, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(sift_features), "--split", "full",
                           "--detector-name", "sift", "--results-bench-dir", str(tmp_path)], capsys)
    assert code == 2 and "--allow-missing" in err
    code, _, err = _bench(["--data-dir", str(hseq_mini), "--results-dir", str(sift_features), "--split", "full",
                           "--allow-missing", "--detector-name", "orb", "--results-bench-dir", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: no features of 'orb'")
    assert "orb/<sequence>/<k>.ppm.kpt.npy nor" in err and "orb/hpatches-sequences-release/<sequence>/" in err
    assert "keynet baselines --method orb" in err and "--extract" in err
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


def test_image_list_split_all_and_clean_errors(hseq_mini, tmp_path, capsys):
    """``python -m HSequences_bench.hsequences image-list``: --split all lists the folder's
    sequences; a missing folder, --split all without --data-dir or a bad split are one
    error line and exit 2, never a traceback."""
    out = tmp_path / "list.txt"
    assert hs.main(["image-list", "--split", "all", "--data-dir", str(hseq_mini), "--out", str(out)]) == 0
    lines = out.read_text().split()
    assert len(lines) == 24 and lines[0] == "hpatches-sequences-release/i_leuven/1.ppm"
    assert hs.main(["image-list", "--split", "all", "--data-dir", str(hseq_mini), "--prefix", "",
                    "--out", str(out)]) == 0
    assert out.read_text().split()[:2] == ["i_leuven/1.ppm", "i_leuven/2.ppm"]
    capsys.readouterr()
    for args, words in ((["--split", "all", "--data-dir", str(tmp_path / "myseqs")], "data directory not found"),
                        (["--split", "full", "--data-dir", str(tmp_path / "myseqs")], "data directory not found"),
                        (["--split", "all"], "--data-dir"),
                        (["--split", "nope", "--data-dir", str(hseq_mini)], "split 'nope' not in")):
        assert hs.main(["image-list", *args, "--out", str(tmp_path / "x.txt")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], (args, err)
    with pytest.raises(SystemExit) as exc:
        hs.main(["image-list", "--split", "all", "--bogus", "--out", "x"])
    assert exc.value.code == 2


# ------------------------------------------------------------------ the folder layout, end to end
@pytest.fixture(scope="module")
def small_hseq(hseq_mini, tmp_path_factory):
    """v_graffiti at half size (homographies rescaled to match, pixel centres kept), so
    that Key.Net extraction takes seconds: an HPatches-layout folder of one sequence."""
    data = tmp_path_factory.mktemp("small") / "seqs"
    (data / "v_graffiti").mkdir(parents=True)
    f = 0.5
    a = np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]])
    for k in range(1, 7):
        img = cv2.imread(str(hseq_mini / "v_graffiti" / f"{k}.ppm"))
        cv2.imwrite(str(data / "v_graffiti" / f"{k}.ppm"), cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
        if k > 1:
            h = np.loadtxt(hseq_mini / "v_graffiti" / f"H_1_{k}")
            np.savetxt(data / "v_graffiti" / f"H_1_{k}", a @ h @ np.linalg.inv(a))
    return data


def _keynet(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["keynet"])  # keynet.cli names the command in argv[0]
    return keynet_cli.main(argv)


def _readme_benchmark_commands():
    """The keynet commands of step 2 of the README's quick start (continued lines joined)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    step2 = block.split("# 2.", 1)[1]
    return [shlex.split(line.split("#", 1)[0]) for line in step2.splitlines()
            if line.strip().startswith("keynet ") and not line.strip().startswith("keynet download")]


@pytest.mark.slow
def test_readme_benchmark_quick_start_runs_as_written(small_hseq, tmp_path, monkeypatch, capsys):
    """Step 2 of the README: keynet extract --image-dir DATA, then keynet bench --data-dir DATA
    with the same --results-dir and name, from a folder that is not the repository."""
    commands = _readme_benchmark_commands()
    assert [c[:2] for c in commands] == [["keynet", "extract"], ["keynet", "bench"]], commands
    extract, bench = commands
    data = extract[extract.index("--image-dir") + 1]
    assert bench[bench.index("--data-dir") + 1] == data
    assert bench[bench.index("--results-dir") + 1] == extract[extract.index("--results-dir") + 1]
    assert bench[bench.index("--detector-name") + 1] == extract[extract.index("--network-version") + 1]
    assert "HPatches_images.txt" not in " ".join(" ".join(c) for c in commands)
    monkeypatch.chdir(tmp_path)  # anywhere: nothing of the repository is needed
    swap = lambda argv: [str(small_hseq) if w == data else w for w in argv[1:]]  # noqa: E731
    assert _keynet(swap(extract), monkeypatch) == 0
    name = extract[extract.index("--network-version") + 1]
    feats = tmp_path / extract[extract.index("--results-dir") + 1] / name
    assert (feats / "v_graffiti" / "1.ppm.kpt.npy").is_file() and (feats / "v_graffiti" / "6.ppm.dsc.npy").is_file()
    capsys.readouterr()
    assert _keynet(swap(bench) + ["--no-plot"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert f"## {name} / all: 1 sequences, 5 pairs" in out and "Rep. Single" in out and "Matching Score" in out
    rep = float(re.search(r"Rep\. Single: ([0-9.]+)", out).group(1))
    assert 30 < rep <= 100


@pytest.mark.slow
def test_missing_features_name_the_extract_command_that_makes_them(small_hseq, tmp_path, monkeypatch, capsys):
    """The error gives the exact command for this --data-dir / --results-dir / name; running
    it makes the benchmark run. The same for a baseline's name."""
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "my features"  # a space: the command is quoted for the shell
    common = ["--data-dir", str(small_hseq), "--results-dir", str(res), "--split", "all", "--no-plot",
              "--results-bench-dir", str(tmp_path / "bench")]
    assert hsequences_bench.main(common + ["--detector-name", "mine", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no features of 'mine' for the sequences of ")
    hint = err[0].split("create them with: ", 1)[1].split(" (or add --extract", 1)[0]
    assert shlex.split(hint) == ["keynet", "extract", "--image-dir", str(small_hseq), "--results-dir", str(res),
                                 "--network-version", "mine"]
    assert _keynet(shlex.split(hint)[1:] + ["--no-progress"], monkeypatch) == 0
    capsys.readouterr()
    assert hsequences_bench.main(common + ["--detector-name", "mine", "fast"]) == 2  # now fast is missing
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no features of 'fast'")
    for part in err.split("create them with: ", 1)[1].split(" (or add --extract", 1)[0].split(" && "):
        words = shlex.split(part)
        if words[:3] == ["python", "-m", "HSequences_bench.hsequences"]:
            assert hs.main(words[3:]) == 0
        else:
            assert words[:3] == ["keynet", "baselines", "--method"]
            assert _keynet(words[1:] + ["--no-progress"], monkeypatch) == 0
    capsys.readouterr()
    assert hsequences_bench.main(common + ["--detector-name", "mine", "fast"]) == 0
    out = capsys.readouterr().out
    assert "## mine / all: 1 sequences, 5 pairs" in out and "## fast / all: 1 sequences, 5 pairs" in out
    # some files missing in the layout found: counted, the first named, the same command
    (res / "mine" / "v_graffiti" / "4.ppm.kpt.npy").unlink()
    assert hsequences_bench.main(common + ["--detector-name", "mine"]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 of the 6 keypoint files are missing" in err and "v_graffiti/4.ppm.kpt.npy" in err
    assert "keynet extract --image-dir" in err


@pytest.mark.slow
def test_bench_extract_makes_missing_features(small_hseq, tmp_path, capsys):
    """--extract: the missing features are extracted with the default settings (Key.Net +
    HardNet; a baseline for its name) into the layout read, then evaluated."""
    res = tmp_path / "res"
    common = ["--data-dir", str(small_hseq), "--results-dir", str(res), "--split", "all", "--no-plot",
              "--results-bench-dir", str(tmp_path / "bench"), "--extract"]
    assert hsequences_bench.main(common + ["--detector-name", "KeyNet_default", "harris"]) == 0
    out = capsys.readouterr().out
    assert (res / "KeyNet_default" / "v_graffiti" / "6.ppm.dsc.npy").is_file()
    assert (res / "harris" / "v_graffiti" / "6.ppm.kpt.npy").is_file()
    assert "## KeyNet_default / all: 1 sequences, 5 pairs" in out and "## harris / all: 1 sequences" in out
    assert "KeyNet_default: extracting the missing features of 1 sequence(s)" in out
    # an official-layout detector with a file missing is completed in its own layout
    official = res / "official" / "hpatches-sequences-release"
    shutil.copytree(res / "harris", official)
    (official / "v_graffiti" / "2.ppm.kpt.npy").unlink()
    (official / "v_graffiti" / "2.ppm.dsc.npy").unlink()
    assert feature_layout(res, "official", ["v_graffiti"]) == "hpatches-sequences-release"
    assert hsequences_bench.main(common + ["--detector-name", "official"]) == 0
    assert (official / "v_graffiti" / "2.ppm.kpt.npy").is_file() and not (res / "official" / "v_graffiti").exists()


def test_feature_layout_and_hint(tmp_path):
    seqs = ["v_a"]
    assert feature_layout(tmp_path, "d", seqs) == ""  # nothing yet: where keynet extract --image-dir writes
    assert feature_layout(tmp_path, "d", seqs, "mine") == "mine"  # a given prefix is used as given
    for k in (1, 2):
        (tmp_path / "d" / "hpatches-sequences-release" / "v_a").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "d" / "hpatches-sequences-release" / "v_a" / f"{k}.ppm.kpt.npy", np.zeros((0, 4)))
    assert feature_layout(tmp_path, "d", seqs) == "hpatches-sequences-release"
    (tmp_path / "d" / "v_a").mkdir()
    for k in (1, 2, 3):
        np.save(tmp_path / "d" / "v_a" / f"{k}.ppm.kpt.npy", np.zeros((0, 4)))
    assert feature_layout(tmp_path, "d", seqs) == ""  # the more complete one
    assert extraction_hint("d", "R", "D", "") == "keynet extract --image-dir D --results-dir R --network-version d"
    assert extraction_hint("d", "R", "D", "hpatches-sequences-release").endswith(
        "--network-version d/hpatches-sequences-release")


def test_readme_tests_section_installs_pytest_as_ci_does():
    """The README's test command works after its quick start: the Tests section installs
    pytest (pip install . does not), with the commands CI (.ci/run) runs."""
    readme = (ROOT / "README.md").read_text()
    tests = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    block = tests.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#", 1)[0].strip() for ln in block.splitlines() if ln.split("#", 1)[0].strip()]
    assert commands[-1] == "python -m pytest -q tests"
    installs = [c for c in commands if c.startswith("pip install")]
    requirements = (ROOT / "requirements.txt").read_text()
    extras = (ROOT / "pyproject.toml").read_text()
    assert any(("-r requirements.txt" in c and re.search(r"^pytest\b", requirements, re.M))
               or ('.[test]' in c and re.search(r"test = \[[^]]*pytest", extras)) for c in installs), installs
    noise = {"python", "python3", "-m", "--quiet", "-q"}  # CI's spelling of the same command
    ci = [[w for w in shlex.split(ln) if w not in noise] for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ("pip install" in ln or "pytest" in ln) and not ln.lstrip().startswith("#")]
    for c in commands:
        words = [w for w in shlex.split(c) if w not in noise]
        assert words in ci or c in (ROOT / ".ci" / "run").read_text(), f"README runs {c!r}, CI does not"
    # the one-line mention at the top says how to get pytest too
    top = readme.split("## Quick start", 1)[0]
    assert "python -m pytest -q tests" in top and "pip install" in top.split("python -m pytest -q tests")[0][-200:]
