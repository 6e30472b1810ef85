"""Descriptor matchers (keynet.pipeline.matching) on hand-made descriptor sets, and image pairs."""
from __future__ import annotations

import numpy as np
import pytest

from keynet.pipeline import matching
from keynet.pipeline.matching import MatcherConfig, match_descriptors
from keynet.pipeline.pairs import PairsError, exhaustive_pairs, make_pairs, read_pairs, sequential_pairs


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def basis(i, d=8):
    e = np.zeros(d, np.float32)
    e[i] = 1
    return e


def match_set(method, d0, d1, threshold=None):
    m, s = match_descriptors(d0, d1, MatcherConfig(method, threshold))
    return {tuple(r) for r in m.tolist()}, m, s


@pytest.fixture
def handmade():
    """Image 0: four descriptors. Image 1:
    - e0 again (a clean match for 0),
    - two near copies of e1 (an ambiguous match for 1: fails the ratio test),
    - something between e2 and e3, nearer e2 (nearest neighbour of both 2 and 3, mutual with 2 only),
    - a far-off descriptor nobody should match."""
    d0 = np.stack([basis(0), basis(1), basis(2), basis(3)])
    d1 = unit(np.stack([basis(0) + 0.05 * basis(5),
                        basis(1) + 0.10 * basis(6), basis(1) + 0.11 * basis(7),
                        basis(2) + 0.6 * basis(3),
                        basis(4)]))
    return d0, d1


def test_nn_mnn_mutual_check(handmade):
    d0, d1 = handmade
    nn, _, _ = match_set("nn", d0, d1)
    mnn, _, _ = match_set("mnn", d0, d1)
    assert (3, 3) in nn and (2, 3) in nn  # both 2 and 3 pick the in-between descriptor
    assert (2, 3) in mnn and (3, 3) not in mnn  # ... which is mutual with 2 only
    assert (0, 0) in mnn and (1, 1) in mnn
    assert all(j != 4 for _, j in mnn)


def test_ratio_tests(handmade):
    d0, d1 = handmade
    snn, _, _ = match_set("snn", d0, d1)
    assert (0, 0) in snn
    assert not any(i == 1 for i, _ in snn)  # two look-alike candidates: ambiguous
    smnn, _, _ = match_set("smnn", d0, d1)
    assert (0, 0) in smnn and not any(i == 1 for i, _ in smnn)
    assert not any(i == 3 for i, _ in smnn)  # not mutual
    # a loose enough ratio accepts the ambiguous match
    loose, _, _ = match_set("snn", d0, d1, threshold=0.999)
    assert any(i == 1 for i, _ in loose)


def test_smnn_is_the_ratio_test_in_both_directions():
    """0 -> 0 passes the ratio test from image 0, but seen from image 1 descriptor 0
    has two close candidates in image 0: smnn rejects what snn accepts."""
    d0 = unit(np.stack([basis(0), basis(0) + 0.02 * basis(2), basis(3)]))
    d1 = unit(np.stack([basis(0) - 0.05 * basis(1), basis(4), basis(5)]))
    snn, _, _ = match_set("snn", d0, d1, 0.9)
    smnn, _, _ = match_set("smnn", d0, d1, 0.9)
    assert (0, 0) in snn and (0, 0) not in smnn
    assert (0, 0) in match_set("mnn", d0, d1)[0]  # it is a mutual nearest neighbour


def test_distance_threshold_and_scores(handmade):
    d0, d1 = handmade
    _, m, s = match_set("mnn", d0, d1)
    assert np.allclose(s, np.sum(d0[m[:, 0]] * d1[m[:, 1]], axis=1), atol=1e-6)  # cosine similarity
    assert np.all(np.diff(m[:, 0]) > 0)  # sorted by index in image 0
    near, _, _ = match_set("mnn", d0, d1, threshold=0.2)  # drops the 0.55-distance match (2, 3)
    assert (0, 0) in near and (2, 3) not in near


def test_empty_and_bad_inputs():
    d = unit(np.eye(4, 8))
    m, s = match_descriptors(np.zeros((0, 8)), d)
    assert m.shape == (0, 2) and s.shape == (0,)
    with pytest.raises(ValueError, match="unknown matcher"):
        MatcherConfig("best")
    with pytest.raises(ValueError, match="descriptor sizes differ"):
        match_descriptors(d, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="needs the keypoints"):
        match_descriptors(d, d, MatcherConfig("adalam"))


def test_adalam_rejects_geometrically_inconsistent_matches():
    """Image 1 is image 0 under a similarity; a third of the correspondences get shuffled
    positions (descriptors still identical). Mutual NN keeps them all; AdaLAM, which checks
    local affine consistency using positions and scales, drops most of the shuffled ones."""
    rng = np.random.default_rng(0)
    n = 1500
    xy0 = rng.uniform(0, [640, 480], (n, 2))
    scale0 = rng.uniform(1, 4, n)
    A = 1.2 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    xy1 = xy0 @ A.T + [30, -20]
    bad = rng.random(n) < 1 / 3
    xy1[bad] = rng.uniform(0, [640, 480], (bad.sum(), 2))
    desc = unit(rng.standard_normal((n, 128)))
    d1 = unit(desc + 0.05 * rng.standard_normal((n, 128)))
    k0 = np.column_stack([xy0, scale0])
    k1 = np.column_stack([xy1, scale0 * 1.2])
    mnn, _ = match_descriptors(desc, d1, MatcherConfig("mnn"))
    ada, _ = match_descriptors(desc, d1, MatcherConfig("adalam"), k0, k1, (480, 640), (480, 640))
    assert len(mnn) > 0.95 * n and bad[mnn[:, 0]].mean() > 0.3
    assert np.all(ada[:, 0] == ada[:, 1])
    assert (~bad[ada[:, 0]]).sum() > 0.8 * (~bad).sum()
    assert bad[ada[:, 0]].mean() < 0.05


def test_adalam_checks_the_orientations_of_oriented_features():
    """Image 1 is image 0 turned by 20 degrees (and shifted); every descriptor matches its
    twin. With orientations, a quarter of the points get an orientation in image 1 that does
    not turn with the image: AdaLAM keeps them out of the neighbourhoods of the consistent
    seeds (its 30-degree rule), so it drops most of them (those that seed a neighbourhood of
    their own, being well placed, may survive) and keeps the others; without orientations
    (upright features) it keeps them all."""
    rng = np.random.default_rng(1)
    n = 1200
    xy0 = rng.uniform(0, [640, 480], (n, 2))
    t = np.deg2rad(20.0)
    xy1 = xy0 @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T + [60, -40]
    desc = unit(rng.standard_normal((n, 128)))
    d1 = unit(desc + 0.05 * rng.standard_normal((n, 128)))
    k0, k1 = np.column_stack([xy0, np.full(n, 2.0)]), np.column_stack([xy1, np.full(n, 2.0)])
    ori0 = rng.uniform(0, 360, n)
    ori1 = (ori0 + 20.0) % 360
    off = rng.random(n) < 0.25
    ori1[off] = (ori1[off] + rng.uniform(90, 270, off.sum())) % 360
    cfg = MatcherConfig("adalam")
    upright, _ = match_descriptors(desc, d1, cfg, k0, k1, (480, 640), (600, 800))
    oriented, _ = match_descriptors(desc, d1, cfg, k0, k1, (480, 640), (600, 800), ori0, ori1)
    assert np.all(oriented[:, 0] == oriented[:, 1]) and np.all(upright[:, 0] == upright[:, 1])
    assert off[upright[:, 0]].sum() > 0.9 * off.sum()
    assert off[oriented[:, 0]].sum() < 0.6 * off.sum()
    assert (~off[oriented[:, 0]]).sum() > 0.9 * (~off).sum()
    lafs = matching.lafs_from_keypoints(k0, ori0)
    from kornia.feature import get_laf_orientation
    kornia_deg = get_laf_orientation(lafs).flatten().numpy()
    assert np.abs(((kornia_deg + ori0 + 180.0) % 360.0) - 180.0).max() < 1e-3  # kornia's angle = -ours


# ----------------------------------------------------------------------------- pairs
def test_pair_generation(tmp_path):
    names = [f"{i}.jpg" for i in range(5)]
    assert len(exhaustive_pairs(names)) == 10
    seq = sequential_pairs(names, window=2)
    assert seq == [("0.jpg", "1.jpg"), ("0.jpg", "2.jpg"), ("1.jpg", "2.jpg"), ("1.jpg", "3.jpg"),
                   ("2.jpg", "3.jpg"), ("2.jpg", "4.jpg"), ("3.jpg", "4.jpg")]
    f = tmp_path / "pairs.txt"
    f.write_text("# comment\n0.jpg 1.jpg\n\n1.jpg 0.jpg\n2.jpg 4.jpg 0.5\n")
    assert read_pairs(f, names) == [("0.jpg", "1.jpg"), ("2.jpg", "4.jpg")]  # duplicate dropped
    assert make_pairs(names, "sequential", pairs_file=f) == read_pairs(f)  # a file wins


@pytest.mark.parametrize("content,message", [
    ("", "pairs file is empty"),
    ("# only a comment\n", "pairs file is empty"),
    ("0.jpg\n", "expected 'name0 name1'"),
    ("0.jpg 0.jpg\n", "paired with itself"),
    ("0.jpg 9.jpg\n", "unknown image '9.jpg'"),
])
def test_bad_pairs_files(tmp_path, content, message):
    f = tmp_path / "pairs.txt"
    f.write_text(content)
    with pytest.raises(PairsError, match=message):
        read_pairs(f, ["0.jpg", "1.jpg"])


def test_missing_pairs_file_and_too_few_images(tmp_path):
    with pytest.raises(PairsError, match="not found"):
        make_pairs(["a", "b"], pairs_file=tmp_path / "nope.txt")
    with pytest.raises(PairsError, match="at least 2"):
        make_pairs(["a"])
    with pytest.raises(PairsError, match="window"):
        sequential_pairs(["a", "b"], 0)


def test_laf_radius_is_the_described_region():
    lafs = matching.lafs_from_keypoints(np.array([[10.0, 20.0, 2.0]]))
    assert lafs.shape == (1, 1, 2, 3)
    assert np.allclose(lafs[0, 0, :, 2].numpy(), [10, 20])
    assert np.isclose(float(lafs[0, 0, 0, 0]), 2.0 * matching.LAF_RADIUS_PER_SCALE)


def test_match_stage_memory_is_bounded_and_the_matches_unchanged(tmp_path, monkeypatch):
    """The match stage keeps at most FEATURE_CACHE_IMAGES images' features; evicting and
    rereading gives the same matches as keeping all."""
    from keynet.pipeline import hloc_io, stages as m
    from keynet.pipeline.pairs import exhaustive_pairs

    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 128)).astype(np.float32)
    names = [f"im{i}.png" for i in range(5)]
    with hloc_io.open_h5(tmp_path / "features.h5", "w") as fd:
        for n in names:
            d = base + 0.3 * rng.normal(size=base.shape).astype(np.float32)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            k = np.c_[rng.uniform(0, 100, (300, 2)), np.ones(300), np.ones(300)]
            hloc_io.write_features(fd, n, k, d, (100, 100))
    pairs = exhaustive_pairs(names)
    m.match_pairs(pairs, tmp_path / "features.h5", tmp_path / "all.h5", progress=False)
    loads = []
    real = hloc_io.read_features
    monkeypatch.setattr(hloc_io, "read_features", lambda fd, name: loads.append(name) or real(fd, name))
    monkeypatch.setattr(m, "FEATURE_CACHE_IMAGES", 2)
    m.match_pairs(pairs, tmp_path / "features.h5", tmp_path / "few.h5", progress=False)
    assert len(loads) > len(names)  # evicted and read again
    for a, b in pairs:
        x, y = hloc_io.read_matches(tmp_path / "all.h5", a, b), hloc_io.read_matches(tmp_path / "few.h5", a, b)
        assert len(x[0]) > 100 and np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
