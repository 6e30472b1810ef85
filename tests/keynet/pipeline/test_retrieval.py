"""Retrieval pairs (keynet.pipeline.retrieval, ``--pairs retrieval``): VLAD against a plain
reference computation, k-nearest pairs where the answer is known, the codebook's round trip
and reuse, the cache, and bad inputs. Synthetic descriptors in a real ``features.h5``."""
from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from keynet.commands import match as match_cli
from keynet.commands import reconstruct as reconstruct_cli
from keynet.pipeline import hloc_io, retrieval
from keynet.pipeline.pairs import PAIR_MODES, PairsError, make_pairs, read_pairs
from keynet.pipeline.retrieval import RetrievalConfig, RetrievalError


def vlad_reference(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """VLAD by plain loops: nearest centroid, residual sums, signed sqrt, intra L2, L2."""
    k, d = c.shape
    v = np.zeros((k, d))
    for row in x.astype(np.float64):
        j = int(np.argmin([np.sum((row - cj) ** 2) for cj in c.astype(np.float64)]))
        v[j] += row - c[j]
    for j in range(k):
        for t in range(d):
            v[j, t] = np.sign(v[j, t]) * np.sqrt(abs(v[j, t]))
        n = np.sqrt(np.sum(v[j] ** 2))
        if n > 0:
            v[j] /= n
    v = v.reshape(-1)
    n = np.sqrt(np.sum(v ** 2))
    return v / n if n > 0 else v


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------- VLAD
def test_vlad_equals_the_plain_loop_reference():
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((300, 16)))
    c = unit(rng.standard_normal((8, 16)))
    v = retrieval.vlad(x, c)
    assert v.shape == (8 * 16,) and v.dtype == np.float32
    np.testing.assert_allclose(v, vlad_reference(x, c), atol=1e-5)


def test_vlad_properties():
    rng = np.random.default_rng(1)
    c = unit(rng.standard_normal((6, 8)))
    # descriptors near centroids 0 and 3 only: the other blocks stay zero, the two used ones have
    # equal norms (intra-normalisation) and the whole vector is unit length
    x = np.concatenate([c[0] + 0.05 * rng.standard_normal((40, 8)), c[3] + 0.05 * rng.standard_normal((25, 8))])
    v = retrieval.vlad(x, c).reshape(6, 8)
    norms = np.linalg.norm(v, axis=1)
    assert np.allclose(norms[[1, 2, 4, 5]], 0) and np.allclose(norms[[0, 3]], 1 / np.sqrt(2), atol=1e-6)
    assert np.isclose(np.linalg.norm(v), 1.0)
    # the order of the descriptors does not matter; no descriptor -> zeros
    np.testing.assert_allclose(retrieval.vlad(x[::-1], c).reshape(6, 8), v, atol=1e-6)
    assert not retrieval.vlad(np.zeros((0, 8)), c).any()
    assert np.array_equal(retrieval.assign(c, c), np.arange(6))


# ----------------------------------------------------------------------------- nearest pairs
def test_knn_pairs_find_the_groups():
    """Three groups of four vectors around three orthogonal directions: with K = 3 every
    image's neighbours are exactly the rest of its group; the blocked search (two rows a
    block) gives the exhaustive answer."""
    rng = np.random.default_rng(2)
    axes = np.eye(12)[[0, 5, 9]]
    vecs = unit(np.concatenate([a + 0.1 * rng.standard_normal((4, 12)) for a in axes]))
    names = [f"g{g}_{i}.jpg" for g in range(3) for i in range(4)]
    pairs = retrieval.knn_pairs(names, vecs, 3)
    expected = {frozenset(p) for g in range(3) for p in combinations(names[4 * g:4 * g + 4], 2)}
    assert {frozenset(p) for p in pairs} == expected and len(pairs) == 18
    ids, sims = retrieval.nearest_neighbours(vecs, 3, block=2)
    ref = np.argsort(-(vecs @ vecs.T) + 10 * np.eye(12), axis=1)[:, :3]
    assert np.array_equal(ids, ref) and np.all(np.diff(sims, axis=1) <= 1e-7)
    # K larger than the collection: everything else
    assert len(retrieval.knn_pairs(names[:3], vecs[:3], 10)) == 3


# ----------------------------------------------------------------------------- the stage
def write_collection(path, scenes=3, per_scene=4, n=200, dim=32, seed=0, prefix=""):
    """A features.h5 of ``scenes`` x ``per_scene`` images; each scene's images draw their
    descriptors (with noise) from the scene's own 30 prototypes."""
    rng = np.random.default_rng(seed)
    names = []
    with hloc_io.open_h5(path, "w") as fd:
        fd.attrs["extractor"] = "synthetic"
        for s in range(scenes):
            protos = unit(rng.standard_normal((30, dim)))
            for i in range(per_scene):
                d = unit(protos[rng.integers(0, 30, n)] + 0.15 * rng.standard_normal((n, dim)))
                name = f"{prefix}scene{s}/{i:02d}.jpg"
                hloc_io.write_features(fd, name, rng.uniform(0, 100, (n, 2)), d, (100, 100))
                names.append(name)
    return names


def scene_pairs(names):
    return {frozenset(p) for p in combinations(names, 2) if p[0].rsplit("/", 1)[0] == p[1].rsplit("/", 1)[0]}


CFG = RetrievalConfig(num_neighbours=3, num_centroids=8)


def test_retrieval_pairs_cache_and_codebook_round_trip(tmp_path):
    feats = tmp_path / "features.h5"
    names = write_collection(feats)
    logs = []
    res = retrieval.retrieval_pairs(feats, names, tmp_path / "r", CFG, progress=False, log=logs.append)
    assert {frozenset(p) for p in res.pairs} == scene_pairs(names)
    assert not any(res.reused.values())
    assert read_pairs(res.pairs_path, names) == res.pairs  # hloc's name0 name1 lines
    g = np.load(res.global_path)
    assert g.shape == (len(names), 8 * 32) and np.allclose(np.linalg.norm(g, axis=1), 1, atol=1e-5)
    meta = json.loads((tmp_path / "r" / "codebook.json").read_text())
    assert meta["num_centroids"] == 8 and meta["dim"] == 32 and meta["seed"] == 0
    # a re-run reuses every stage and gives the same pairs
    again = retrieval.retrieval_pairs(feats, names, tmp_path / "r", CFG, progress=False, log=logs.append)
    assert all(again.reused.values()) and again.pairs == res.pairs
    # another K reuses the codebook and the global descriptors only
    k2 = retrieval.retrieval_pairs(feats, names, tmp_path / "r", RetrievalConfig(num_neighbours=1, num_centroids=8),
                                   progress=False, log=logs.append)
    assert k2.reused == {"codebook": True, "global": True, "pairs": False}
    # the saved codebook loads back identically and, given explicitly, gives the same pairs
    cb = retrieval.load_codebook(res.codebook_path, dim=32)
    assert cb.shape == (8, 32)
    given = RetrievalConfig(num_neighbours=3, num_centroids=8, codebook=str(res.codebook_path))
    same = retrieval.retrieval_pairs(feats, names, tmp_path / "r2", given, progress=False, log=logs.append)
    assert same.pairs == res.pairs and same.reused["codebook"]
    np.testing.assert_array_equal(np.load(same.global_path), g)
    # ... and is reused on another collection of the same features
    other = tmp_path / "other.h5"
    names2 = write_collection(other, scenes=2, seed=7, prefix="b/")
    res2 = retrieval.retrieval_pairs(other, names2, tmp_path / "r3", given, progress=False, log=logs.append)
    assert {frozenset(p) for p in res2.pairs} == scene_pairs(names2)
    # the same learned codebook from the same inputs: k-means is seeded
    fresh = retrieval.retrieval_pairs(feats, names, tmp_path / "r4", CFG, progress=False, log=logs.append)
    np.testing.assert_array_equal(retrieval.load_codebook(fresh.codebook_path), cb)


def test_changed_collection_recomputes_only_what_changed(tmp_path):
    feats = tmp_path / "features.h5"
    names = write_collection(feats)
    cb = tmp_path / "cb.npy"
    retrieval.save_codebook(cb, retrieval.kmeans_codebook(retrieval.sample_descriptors(feats, names, 2000), 8))
    cfg = RetrievalConfig(num_neighbours=3, codebook=str(cb))
    first = retrieval.retrieval_pairs(feats, names[:8], tmp_path / "r", cfg, progress=False, log=lambda s: None)
    g8 = np.load(first.global_path)
    logs = []
    full = retrieval.retrieval_pairs(feats, names, tmp_path / "r", cfg, progress=False, log=logs.append)
    assert any("8 global descriptor(s) reused, 4 computed" in s for s in logs)
    np.testing.assert_array_equal(np.load(full.global_path)[:8], g8)
    assert {frozenset(p) for p in full.pairs} == scene_pairs(names)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_culprit(tmp_path):
    for field, value in (("num_neighbours", 0), ("num_centroids", 0), ("num_neighbours", 2.5)):
        with pytest.raises(RetrievalError, match=field):
            RetrievalConfig(**{field: value})
    with pytest.raises(RetrievalError, match="neighbours must be >= 1"):
        retrieval.knn_pairs(["a", "b"], np.eye(2, dtype=np.float32), 0)
    feats = tmp_path / "features.h5"
    names = write_collection(feats, scenes=1, per_scene=2)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((8, 128), np.float32))
    with pytest.raises(RetrievalError, match=r"wrong\.npy has 128-dimensional centroids, the descriptors are "
                                             r"32-dimensional"):
        retrieval.retrieval_pairs(feats, names, tmp_path / "r", RetrievalConfig(codebook=str(wrong)), progress=False)
    with pytest.raises(RetrievalError, match="codebook not found: .*nope.npy"):
        retrieval.load_codebook(tmp_path / "nope.npy")
    np.save(tmp_path / "flat.npy", np.ones(5, np.float32))
    with pytest.raises(RetrievalError, match="flat.npy must be a"):
        retrieval.load_codebook(tmp_path / "flat.npy")
    with pytest.raises(RetrievalError, match="cannot make 64 centroids"):
        retrieval.kmeans_codebook(np.zeros((10, 32), np.float32), 64)
    with pytest.raises(RetrievalError, match="no features for image missing.jpg"):
        retrieval.retrieval_pairs(feats, names + ["missing.jpg"], tmp_path / "r", CFG, progress=False)
    with pytest.raises(RetrievalError, match="at least 2"):
        retrieval.retrieval_pairs(feats, names[:1], tmp_path / "r", CFG, progress=False)
    assert "retrieval" in PAIR_MODES
    with pytest.raises(PairsError, match="retrieval.*needs the images' features"):
        make_pairs(names, "retrieval")


# The neighbour count that README.md and docs/cli.md quote ("its 10 most similar images").
DOCUMENTED_NUM_NEIGHBOURS = 10


def test_default_neighbour_count_is_the_documented_one():
    """The default of the API, the configuration and both commands is the documented 10, and
    the documentation still says 10 (a change of either must change the other)."""
    from pathlib import Path

    assert RetrievalConfig().num_neighbours == DOCUMENTED_NUM_NEIGHBOURS
    assert retrieval.DEFAULT_NUM_NEIGHBOURS == DOCUMENTED_NUM_NEIGHBOURS
    for cli in (reconstruct_cli, match_cli):
        assert cli.parse_args(["--image-dir", "x", "--out", "y"]).num_neighbours == DOCUMENTED_NUM_NEIGHBOURS
    cli_doc = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text()
    assert f"`--num-neighbours` ({DOCUMENTED_NUM_NEIGHBOURS}) most similar images" in cli_doc


def test_cli_options(tmp_path, capsys):
    """--num-neighbours and --codebook reach the configuration; a bad value is an argparse
    error (exit 2) and a wrong codebook one line naming it (exit 2)."""
    for cli in (reconstruct_cli, match_cli):
        args = cli.parse_args(["--image-dir", "x", "--out", "y", "--pairs", "retrieval", "--num-neighbours", "7",
                               "--codebook", "cb.npy"])
        assert (args.pairs, args.num_neighbours, args.codebook) == ("retrieval", 7, "cb.npy")
        assert cli.parse_args(["--image-dir", "x", "--out", "y"]).num_neighbours == DOCUMENTED_NUM_NEIGHBOURS
        with pytest.raises(SystemExit) as e:
            cli.parse_args(["--image-dir", "x", "--out", "y", "--num-neighbours", "0"])
        assert e.value.code == 2
        assert "--num-neighbours" in capsys.readouterr().err
    args = reconstruct_cli.parse_args(["--image-dir", "x", "--out", "y", "--mapper", "global"])
    assert args.mapper == "global"
    with pytest.raises(SystemExit):
        reconstruct_cli.parse_args(["--image-dir", "x", "--out", "y", "--mapper", "fast"])
    capsys.readouterr()
