"""``keynet bench`` on sequences of one's own: 2 to N images, image 1 against each image with
a homography H_1_k, said so in the report; incomplete ones named; the plot draws only the
subsets with pairs. Real images (the test image under known homographies), SIFT features."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, Sequence

import cv2
import numpy as np
import pytest

from HSequences_bench import hsequences as hs
from keynet.commands import bench

ROOT = Path(__file__).resolve().parents[2]


def _homography(k: int) -> np.ndarray:
    a = np.deg2rad(4.0 * k)
    scale = 1.0 + 0.04 * k
    return np.array([[scale * np.cos(a), -scale * np.sin(a), 6.0 * k],
                     [scale * np.sin(a), scale * np.cos(a), -4.0 * k],
                     [1e-5 * k, 0.0, 1.0]])


def _make(data: Path, sequences: Dict[str, Sequence[int]], unpaired: Dict[str, Sequence[int]] = {}) -> None:
    """Sequences of the test image: ``1.ppm`` and, for each k, ``k.ppm`` warped by ``H_1_k``
    (written); ``unpaired``: images written without their homography."""
    img = cv2.cvtColor(cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    img = cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)
    for name, ks in sequences.items():
        d = data / name
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "1.ppm"), img)
        for k in list(ks) + list(unpaired.get(name, ())):
            h = _homography(k)
            cv2.imwrite(str(d / f"{k}.ppm"), cv2.warpPerspective(img, h, (320, 320)))
            if k in ks:
                np.savetxt(d / f"H_1_{k}", h)


def _bench(tmp_path: Path, data: Path, *extra: str) -> int:
    return bench.main(["--data-dir", str(data), "--split", "all", "--detector-name", "sift", "--extract",
                       "--results-dir", str(tmp_path / "feats"), "--results-bench-dir", str(tmp_path / "res"),
                       *extra])


def test_sequences_of_2_to_n_images_are_evaluated_and_said_so(tmp_path, capsys):
    data = tmp_path / "data"
    _make(data, {"mine_a": [2, 3], "mine_b": [2], "mine_c": [2, 3, 4, 5, 6, 7]}, unpaired={"mine_b": [3]})
    assert hs.sequence_indices(data, "mine_a") == [1, 2, 3] and hs.unpaired_images(data, "mine_b") == [3]
    assert _bench(tmp_path, data) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "res" / "sift_all.pickle", "rb") as f:
        res = pickle.load(f)
    assert list(zip(res["sequence"], res["pair"])) == [("mine_a", 2), ("mine_a", 3), ("mine_b", 2)] + [
        ("mine_c", k) for k in range(2, 8)]
    assert "3 sequences, 9 pairs" in out
    assert "3 sequence(s) with other pairs than HPatches' 1-2 .. 1-6" in out and "mine_a (1-2, 1-3)" in out
    assert "1 image(s) without a homography H_1_k not evaluated: mine_b/3.ppm" in out
    md = (tmp_path / "res" / "summary_all.md").read_text()
    assert "sift: note: 3 sequence(s) with other pairs" in md
    rep = np.array(res["rep_single_scale"], dtype=float)
    assert np.all(rep > 0.2)  # the homographies are the images' own: the points repeat
    # only the panel with pairs ("other" sequences): one column, not three with two empty
    png = cv2.imread(str(tmp_path / "res" / "mma_all.png"))
    assert png.shape[1] < 600, png.shape


def test_hpatches_like_sequences_keep_the_official_pairs_and_panels(tmp_path, capsys):
    data = tmp_path / "data"
    _make(data, {"i_one": [2, 3, 4, 5, 6], "v_two": [2, 3, 4, 5, 6]})
    assert _bench(tmp_path, data) == 0
    out = capsys.readouterr().out
    assert "other pairs than" not in out and "without a homography" not in out and "2 sequences, 10 pairs" in out
    assert "note" not in (tmp_path / "res" / "summary_all.md").read_text()
    png = cv2.imread(str(tmp_path / "res" / "mma_all.png"))
    assert png.shape[1] > 1200, png.shape  # overall, illumination, viewpoint


def test_an_incomplete_sequence_is_named_with_allow_missing(tmp_path, capsys):
    data = tmp_path / "data"
    _make(data, {"mine": [2]})
    (data / "mine" / "2.ppm").unlink()
    assert _bench(tmp_path, data, "--allow-missing") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 1 requested sequences is complete in" in err[0], err
    assert err[0].endswith("(a sequence needs 1.ppm and at least one image k.ppm with its homography H_1_k)")
    assert "mine lacks" in err[0] and "2.ppm" in err[0]
    with pytest.raises(hs.DatasetError, match="v_absent is not there"):
        hs.check_sequences(data, ["v_absent"], allow_missing=True)
