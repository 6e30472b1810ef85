"""The blocked matchers (keynet.pipeline.nearest) against kornia's own matchers, which build the
whole distance matrix: same matches, same scores, with blocks of a few rows."""
import kornia.feature as KF
import numpy as np
import pytest
import torch

from keynet.pipeline import matching, nearest


def _descriptors(n: int, seed: int, base: torch.Tensor = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 32, generator=g)
    if base is not None:  # a noisy copy of part of the other set: real matches among distractors
        d[: len(base) // 2] = base[: len(base) // 2] + 0.2 * torch.randn(len(base) // 2, 32, generator=g)
    return torch.nn.functional.normalize(d, dim=1)


@pytest.fixture(scope="module")
def sets():
    d0 = _descriptors(300, 0)
    g = torch.Generator().manual_seed(5)  # near-copies in image 0: one-way matches that are not mutual
    d0[200:230] = torch.nn.functional.normalize(d0[:30] + 0.1 * torch.randn(30, 32, generator=g), dim=1)
    d1 = _descriptors(257, 1, base=d0)
    g = torch.Generator().manual_seed(2)
    xy1 = torch.rand(len(d1), 2, generator=g) * 60  # dense enough that FGINN's 10 px exclusion matters
    return d0, d1, xy1


def _same(ours, theirs):
    (dist, idx), (kd, kidx) = ours, theirs
    kd, kidx = kd.reshape(-1), kidx.reshape(-1, 2)
    order = torch.argsort(kidx[:, 0], stable=True)
    assert len(idx) > 20  # the case is not empty
    assert torch.equal(idx, kidx[order])
    torch.testing.assert_close(dist, kd[order], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_entries", [1, 700, 10 ** 9])  # one row a block, a few rows, the whole matrix
def test_blocked_matchers_equal_kornias(sets, max_entries):
    d0, d1, xy1 = sets
    lafs1 = torch.zeros(1, len(d1), 2, 3)
    lafs1[0, :, :, 2] = xy1
    lafs0 = torch.zeros(1, len(d0), 2, 3)
    _same(nearest.nn(d0, d1, max_entries), KF.match_nn(d0, d1))
    _same(nearest.mnn(d0, d1, max_entries), KF.match_mnn(d0, d1))
    _same(nearest.snn(d0, d1, 0.9, max_entries), KF.match_snn(d0, d1, 0.9))
    _same(nearest.smnn(d0, d1, 0.9, max_entries), KF.match_smnn(d0, d1, 0.9))
    _same(nearest.smnn(d1, d0, 0.8, max_entries), KF.match_smnn(d1, d0, 0.8))
    one_way, both = (nearest.fginn(d0, d1, xy1, 0.8, 10.0, mutual, max_entries) for mutual in (False, True))
    _same(one_way, KF.match_fginn(d0, d1, lafs0, lafs1, 0.8, 10.0, mutual=False))
    _same(both, KF.match_fginn(d0, d1, lafs0, lafs1, 0.8, 10.0, mutual=True))
    assert len(both[1]) < len(one_way[1])  # the mutual check removes some


@pytest.mark.parametrize("max_entries", [1, 700, 10 ** 9])
def test_fginn_both_ways_is_the_common_matches_of_kornias_two_calls(sets, max_entries):
    """One pass over the distances gives what kornia's FGINN gives seen from image 0 and from
    image 1 (both mutual), kept where both agree: the union matcher of smnn."""
    d0, d1, xy1 = sets
    g = torch.Generator().manual_seed(6)
    xy0 = torch.rand(len(d0), 2, generator=g) * 60
    lafs0, lafs1 = torch.zeros(1, len(d0), 2, 3), torch.zeros(1, len(d1), 2, 3)
    lafs0[0, :, :, 2], lafs1[0, :, :, 2] = xy0, xy1
    for th in (0.8, 0.95):
        _, fwd = KF.match_fginn(d0, d1, lafs0, lafs1, th, 10.0, mutual=True)
        _, bwd = KF.match_fginn(d1, d0, lafs1, lafs0, th, 10.0, mutual=True)
        back = {(int(b), int(a)) for a, b in bwd.reshape(-1, 2).tolist()}
        want = [p for p in fwd.reshape(-1, 2).tolist() if tuple(p) in back]
        got = nearest.fginn_both_ways(d0, d1, xy0, xy1, th, 10.0, max_entries)
        assert len(want) > 10 and got.tolist() == sorted(want)
        assert len(want) < len(fwd)  # the ratio test seen from image 1 removes some


def test_blocked_neighbours_are_the_matrix_extremes(sets):
    d0, d1, _ = sets
    dm = torch.cdist(d0, d1)
    rv, ri, cv, ci = nearest.blocked_neighbours(d0, d1, 3, 2, max_entries=500)
    kv, ki = torch.topk(dm, 3, dim=1, largest=False)
    kcv, kci = torch.topk(dm, 2, dim=0, largest=False)
    assert torch.equal(ri, ki) and torch.equal(ci, kci)
    torch.testing.assert_close(rv, kv)
    torch.testing.assert_close(cv, kcv)
    with pytest.raises(ValueError, match="k <= 257"):
        nearest.blocked_neighbours(d0, d1, 258)


def test_small_sets_give_no_match():
    one, many = _descriptors(1, 3), _descriptors(5, 4)
    for fn in (lambda a, b: nearest.snn(a, b, 0.9), lambda a, b: nearest.smnn(a, b, 0.9)):
        assert len(fn(many, one)[1]) == 0
    assert len(nearest.smnn(one, many, 0.9)[1]) == 0
    assert len(nearest.nn(many[:0], many)[1]) == 0


def test_match_descriptors_switches_to_blocks_above_the_limit(sets, monkeypatch):
    """Above MAX_DISTANCE_ENTRIES the matching stage uses the blocked matchers, and gets the
    same matches as below it (kornia's)."""
    d0, d1, _ = sets
    below = {m: matching.match_descriptors(d0.numpy(), d1.numpy(), matching.MatcherConfig(m))
             for m in ("smnn", "snn", "mnn", "nn")}
    calls = []
    real = nearest.blocked_neighbours
    monkeypatch.setattr(nearest, "MAX_DISTANCE_ENTRIES", 1000)
    monkeypatch.setattr(nearest, "blocked_neighbours", lambda *a, **k: calls.append(1) or real(*a, **k))
    for m, (idx, scores) in below.items():
        got, got_scores = matching.match_descriptors(d0.numpy(), d1.numpy(), matching.MatcherConfig(m))
        assert np.array_equal(got, idx) and np.allclose(got_scores, scores), m
    assert len(calls) == 4


def test_match_union_switches_to_blocked_fginn_above_the_limit(sets, monkeypatch):
    d0, d1, xy1 = sets
    g = torch.Generator().manual_seed(6)
    xy0 = torch.rand(len(d0), 2, generator=g) * 60
    def frames(xy):
        la = np.zeros((len(xy), 2, 3), np.float32)
        la[:, 0, 0] = la[:, 1, 1] = 4.0
        la[:, :, 2] = xy.numpy()
        return la
    k0 = np.c_[xy0.numpy(), np.ones(len(xy0))]
    k1 = np.c_[xy1.numpy(), np.ones(len(xy1))]
    args = (k0, d0.numpy(), frames(xy0), k1, d1.numpy(), frames(xy1), (60, 60), (60, 60))
    whole, whole_scores = matching.match_union(*args)
    monkeypatch.setattr(nearest, "MAX_DISTANCE_ENTRIES", 1000)
    blocked, blocked_scores = matching.match_union(*args)
    assert len(whole) > 20 and np.array_equal(blocked, whole) and np.allclose(blocked_scores, whole_scores)


def _grown(sets):
    """Image 0's and image 1's descriptors as three view levels' unions (each the one before
    it with new features appended; the sizes of the levels differ between the images)."""
    d0, d1, xy1 = sets
    g = torch.Generator().manual_seed(9)
    xy0 = torch.rand(len(d0), 2, generator=g) * 60
    return [(d0[:a], d1[:b], xy0[:a], xy1[:b]) for a, b in ((120, 90), (200, 200), (300, 257))]


@pytest.mark.parametrize("max_entries", [700, 10 ** 9])
def test_growing_neighbours_are_the_whole_sets_neighbours(sets, max_entries):
    """Each level's candidates, computed from the kept ones and the new rows' and columns'
    distances only, are those of one blocked_neighbours call on the whole level's sets (the
    distances to the matrix product's rounding, as between blocks); and fewer distances were
    computed than by the whole calls."""
    grow = nearest.GrowingNeighbours(max_entries)
    whole_entries = 0
    for a, b, _, _ in _grown(sets):
        got = grow(a, b, 10, 10)
        want = nearest.blocked_neighbours(a, b, 10, 10, max_entries)
        whole_entries += len(a) * len(b)
        _same_neighbours(got, want)
    assert grow.entries == 120 * 90 + (200 * 200 - 120 * 90) + (300 * 257 - 200 * 200) < whole_entries
    # the same sets again: nothing computed; other sets (not grown from the kept): computed whole
    before = grow.entries
    grow(a, b, 10, 10)
    assert grow.entries == before
    other = torch.flip(a, [0])
    _same_neighbours(grow(other, b, 10, 10), nearest.blocked_neighbours(other, b, 10, 10, max_entries))
    assert grow.entries == before + len(a) * len(b)
    # another number of candidates: computed whole
    _same_neighbours(grow(other, b, 3, 2), nearest.blocked_neighbours(other, b, 3, 2, max_entries))
    assert grow.entries == before + 2 * len(a) * len(b)


def _same_neighbours(got, want):
    assert torch.equal(got.row_idx, want.row_idx) and torch.equal(got.col_idx, want.col_idx)
    torch.testing.assert_close(got.row_vals, want.row_vals, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.col_vals, want.col_vals, rtol=0, atol=1e-6)


def test_fginn_both_ways_with_growing_neighbours_gives_the_same_matches(sets):
    grow = nearest.GrowingNeighbours()
    for d0, d1, xy0, xy1 in _grown(sets):
        want = nearest.fginn_both_ways(d0, d1, xy0, xy1, 0.95, 10.0)
        got = nearest.fginn_both_ways(d0, d1, xy0, xy1, 0.95, 10.0, neighbours=grow)
        assert len(want) > 5 and torch.equal(got, want)
