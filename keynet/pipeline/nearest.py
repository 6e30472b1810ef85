"""Nearest-neighbour descriptor matching in bounded memory.

kornia's matchers (``match_nn``, ``match_mnn``, ``match_snn``, ``match_smnn``,
``match_fginn``) build the whole ``N0 x N1`` distance matrix: 2.3 GB of float32 for two
unions of 24,000 view-synthesis features, more than a small machine or GPU holds. The
functions here give the same matches (kornia's definitions, restated below) from blocks of
rows of that matrix (``torch.cdist`` of a block of image 0's descriptors against all of
image 1's), so at most ``max_entries`` distances exist at a time:

* ``nn``: each descriptor of image 0 and its nearest neighbour in image 1, distance ``d1``;
* ``mnn``: the ``nn`` matches whose image-1 descriptor has that image-0 descriptor as its own
  nearest neighbour;
* ``snn`` (Lowe's ratio test): the ``nn`` matches with ``d1 / d2 <= th``, ``d2`` the distance
  to the second nearest;
* ``smnn``: the mutual ``nn`` matches passing the ratio test in both directions, scored by the
  larger ratio;
* ``fginn`` (MODS): as ``snn``, but the second neighbour is the nearest of the ``min(10, N1)``
  nearest candidates whose ``xy1`` position is at least ``spatial_th`` from the first's (none:
  ratio 0, accepted); ``mutual`` keeps the matches whose image-1 descriptor has its nearest
  neighbour in image 0 there;
* ``fginn_both_ways``: the matches of ``fginn(d0, d1, mutual)`` whose reverse is a match of
  ``fginn(d1, d0, mutual)`` (the ratio test seen from both images, ``smnn``'s union matcher),
  from the rows' and the columns' nearest candidates of one pass over the distances instead
  of two matrices.

Every function returns ``(dists (K,), matches (K, 2) int64)`` ordered by the index in image 0,
as kornia does. The distances of a block are computed as kornia computes them (``torch.cdist``);
a block's matrix product may round differently from the whole one's in the last bit, so a
near-exact tie may be resolved differently: :func:`keynet.pipeline.matching.match_descriptors`
keeps kornia's own functions below :data:`MAX_DISTANCE_ENTRIES`, where every default pipeline
runs, and uses these above it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

#: Above this many distances (256 MB of float32: two sets of 8192 descriptors) the matching
#: stage uses the blocked matchers; each block holds at most this many.
MAX_DISTANCE_ENTRIES = 1 << 26
#: kornia's FGINN candidates: the second neighbour is looked for among the nearest 10.
FGINN_CANDIDATES = 10

Result = Tuple[torch.Tensor, torch.Tensor]


def _no_match(d: torch.Tensor) -> Result:
    return d.new_zeros(0), torch.zeros((0, 2), dtype=torch.long, device=d.device)


class Neighbours(NamedTuple):
    """The nearest candidates of the rows and the columns of ``cdist(d0, d1)``:
    ``row_vals (N0, k)``, ``row_idx (N0, k)``, ``col_vals (k_col, N1)``, ``col_idx (k_col, N1)``,
    each sorted ascending (:func:`blocked_neighbours`)."""

    row_vals: torch.Tensor
    row_idx: torch.Tensor
    col_vals: torch.Tensor
    col_idx: torch.Tensor


def blocked_neighbours(d0: torch.Tensor, d1: torch.Tensor, k: int, k_col: int = 1,
                       max_entries: int = MAX_DISTANCE_ENTRIES) -> Neighbours:
    """The ``k`` smallest distances of each row of ``cdist(d0, d1)`` and the ``k_col`` smallest
    of each column, with their indices, computed on blocks of at most ``max_entries``
    distances: ``(row_vals (N0, k), row_idx (N0, k), col_vals (k_col, N1), col_idx (k_col, N1))``,
    each sorted ascending. ``k <= N1`` and ``k_col <= N0``."""
    n0, n1 = d0.shape[0], d1.shape[0]
    if not (1 <= k <= n1 and 1 <= k_col <= n0):
        raise ValueError(f"need 1 <= k <= {n1} and 1 <= k_col <= {n0}, got k={k}, k_col={k_col}")
    rows = max(1, int(max_entries) // max(1, n1))
    row_vals = d0.new_empty((n0, k))
    row_idx = torch.empty((n0, k), dtype=torch.long, device=d0.device)
    col_vals = d0.new_full((k_col, n1), float("inf"))
    col_idx = torch.zeros((k_col, n1), dtype=torch.long, device=d0.device)
    for start in range(0, n0, rows):
        dm = torch.cdist(d0[start:start + rows], d1)
        v, i = torch.topk(dm, k, dim=1, largest=False)
        row_vals[start:start + len(dm)], row_idx[start:start + len(dm)] = v, i
        kc = min(k_col, len(dm))
        cv, ci = torch.topk(dm, kc, dim=0, largest=False)
        # earlier rows win ties, as in one topk
        col_vals, col_idx = _nearest_of(torch.cat([col_vals, cv]), torch.cat([col_idx, ci + start]), k_col, 0)
    return Neighbours(row_vals, row_idx, col_vals, col_idx)


def _nearest_of(vals: torch.Tensor, idx: torch.Tensor, k: int, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest of candidate lists concatenated along ``dim`` (the earlier list wins
    a tie, as the lower index does in one ``topk``)."""
    order = torch.sort(vals, dim=dim, stable=True).indices.narrow(dim, 0, k)
    return torch.gather(vals, dim, order), torch.gather(idx, dim, order)


class GrowingNeighbours:
    """:func:`blocked_neighbours` of two descriptor sets that grow by appending, as the unions
    of view levels do (level ``L + 1``'s union is level ``L``'s followed by the new views'
    features): a call whose sets start with the previous call's computes only the distances of
    the appended rows and columns and merges their candidates with the kept ones. The
    candidates are those of one :func:`blocked_neighbours` call on the whole sets, as its blocks
    are those of the whole matrix: a distance may differ in the last bit with the block's shape
    (the matrix product's rounding), so a near-exact tie may be ordered differently. Any other
    call computes the whole sets and is kept for the next."""

    def __init__(self, max_entries: int = MAX_DISTANCE_ENTRIES) -> None:
        self.max_entries = int(max_entries)
        self._kept: Optional[Tuple[torch.Tensor, torch.Tensor, int, int, Neighbours]] = None
        #: Distances computed by the calls so far (for the cost tests and benchmarks).
        self.entries = 0

    def _prefix(self, d0: torch.Tensor, d1: torch.Tensor, k: int, k_col: int) -> Optional[Neighbours]:
        if self._kept is None:
            return None
        p0, p1, pk, pkc, nb = self._kept
        if (pk, pkc) != (k, k_col) or len(p0) > len(d0) or len(p1) > len(d1):
            return None
        if not (torch.equal(d0[: len(p0)], p0) and torch.equal(d1[: len(p1)], p1)):
            return None
        return nb

    def __call__(self, d0: torch.Tensor, d1: torch.Tensor, k: int, k_col: int = 1) -> Neighbours:
        nb = self._prefix(d0, d1, k, k_col)
        if nb is None:
            nb = blocked_neighbours(d0, d1, k, k_col, self.max_entries)
            self.entries += len(d0) * len(d1)
        else:
            nb = self._extend(d0, d1, nb, k, k_col)
        self._kept = (d0, d1, k, k_col, nb)
        return nb

    def _extend(self, d0: torch.Tensor, d1: torch.Tensor, nb: Neighbours, k: int, k_col: int) -> Neighbours:
        m0, m1 = nb.row_vals.shape[0], nb.col_vals.shape[1]  # the kept rows and columns
        n0, n1 = len(d0), len(d1)
        rv, ri, cv, ci = nb
        if n1 > m1:  # the kept rows against the new columns
            new = blocked_neighbours(d0[:m0], d1[m1:], min(k, n1 - m1), min(k_col, m0), self.max_entries)
            self.entries += m0 * (n1 - m1)
            rv, ri = _nearest_of(torch.cat([rv, new.row_vals], 1), torch.cat([ri, new.row_idx + m1], 1), k, 1)
            cv, ci = torch.cat([cv, new.col_vals], 1), torch.cat([ci, new.col_idx], 1)  # k_col <= m0 rows
        if n0 > m0:  # the new rows against every column
            new = blocked_neighbours(d0[m0:], d1, k, min(k_col, n0 - m0), self.max_entries)
            self.entries += (n0 - m0) * n1
            rv, ri = torch.cat([rv, new.row_vals]), torch.cat([ri, new.row_idx])
            cv, ci = _nearest_of(torch.cat([cv, new.col_vals]), torch.cat([ci, new.col_idx + m0]), k_col, 0)
        return Neighbours(rv, ri, cv, ci)


def _mutual(row_idx0: torch.Tensor, col_idx0: torch.Tensor) -> torch.Tensor:
    """Rows whose nearest column has that row as its nearest (row_idx0 (N0,), col_idx0 (N1,))."""
    rows = torch.arange(len(row_idx0), device=row_idx0.device)
    return col_idx0[row_idx0] == rows


def nn(d0: torch.Tensor, d1: torch.Tensor, max_entries: int = MAX_DISTANCE_ENTRIES) -> Result:
    """kornia's ``match_nn`` in blocks."""
    if len(d0) == 0 or len(d1) == 0:
        return _no_match(d0)
    v, i, _, _ = blocked_neighbours(d0, d1, 1, 1, max_entries)
    rows = torch.arange(len(d0), device=d0.device)
    return v[:, 0], torch.stack([rows, i[:, 0]], 1)


def mnn(d0: torch.Tensor, d1: torch.Tensor, max_entries: int = MAX_DISTANCE_ENTRIES) -> Result:
    """kornia's ``match_mnn`` in blocks."""
    if len(d0) == 0 or len(d1) == 0:
        return _no_match(d0)
    v, i, _, ci = blocked_neighbours(d0, d1, 1, 1, max_entries)
    keep = _mutual(i[:, 0], ci[0])
    rows = torch.arange(len(d0), device=d0.device)
    return v[keep, 0], torch.stack([rows[keep], i[keep, 0]], 1)


def snn(d0: torch.Tensor, d1: torch.Tensor, th: float, max_entries: int = MAX_DISTANCE_ENTRIES) -> Result:
    """kornia's ``match_snn`` in blocks."""
    if len(d0) == 0 or len(d1) < 2:
        return _no_match(d0)
    v, i, _, _ = blocked_neighbours(d0, d1, 2, 1, max_entries)
    ratio = v[:, 0] / v[:, 1]
    keep = ratio <= th
    rows = torch.arange(len(d0), device=d0.device)
    return ratio[keep], torch.stack([rows[keep], i[keep, 0]], 1)


def smnn(d0: torch.Tensor, d1: torch.Tensor, th: float, max_entries: int = MAX_DISTANCE_ENTRIES) -> Result:
    """kornia's ``match_smnn`` in blocks: mutual nearest neighbours passing the ratio test both
    ways, scored by the larger ratio."""
    if len(d0) < 2 or len(d1) < 2:
        return _no_match(d0)
    v, i, cv, ci = blocked_neighbours(d0, d1, 2, 2, max_entries)
    ratio0 = v[:, 0] / v[:, 1]
    ratio1 = cv[0] / cv[1]
    j = i[:, 0]
    keep = _mutual(j, ci[0]) & (ratio0 <= th) & (ratio1[j] <= th)
    rows = torch.arange(len(d0), device=d0.device)
    return torch.maximum(ratio0, ratio1[j])[keep], torch.stack([rows[keep], j[keep]], 1)


def _fginn_ratio(v: torch.Tensor, i: torch.Tensor, xy: torch.Tensor, spatial_th: float) -> torch.Tensor:
    """FGINN's ratio of each row from its ``k`` nearest (values ``v``, indices ``i`` into the
    positions ``xy``): nearest / the nearest of the others at least ``spatial_th`` from it."""
    cand = xy[i]
    near = torch.norm(cand - cand[:, :1], p=2, dim=2)[:, 1:] < spatial_th
    return v[:, 0] / torch.where(near, float("inf"), v[:, 1:]).min(dim=1).values


def fginn(d0: torch.Tensor, d1: torch.Tensor, xy1: torch.Tensor, th: float, spatial_th: float,
          mutual: bool = False, max_entries: int = MAX_DISTANCE_ENTRIES) -> Result:
    """kornia's ``match_fginn`` in blocks; ``xy1`` (N1, 2): the positions of image 1's features
    (the centres of its LAFs)."""
    if len(d1) < 2 or len(d0) == 0:
        return _no_match(d0)
    k = max(2, min(FGINN_CANDIDATES, len(d1)))
    v, i, _, ci = blocked_neighbours(d0, d1, k, 1, max_entries)
    ratio = _fginn_ratio(v, i, xy1, spatial_th)
    keep = ratio <= th
    if mutual:
        keep &= _mutual(i[:, 0], ci[0])
    rows = torch.arange(len(d0), device=d0.device)
    return ratio[keep], torch.stack([rows[keep], i[keep, 0]], 1)


def fginn_both_ways(d0: torch.Tensor, d1: torch.Tensor, xy0: torch.Tensor, xy1: torch.Tensor, th: float,
                    spatial_th: float, max_entries: int = MAX_DISTANCE_ENTRIES,
                    neighbours: Optional[GrowingNeighbours] = None) -> torch.Tensor:
    """The mutual nearest neighbours that pass FGINN's ratio test seen from both images (kornia's
    ``match_fginn(d0, d1, ..., mutual=True)`` and ``match_fginn(d1, d0, ..., mutual=True)``,
    their common matches) from one pass over the distances: the rows' and the columns' nearest
    candidates of one ``cdist(d0, d1)``, in blocks (``neighbours``: a
    :class:`GrowingNeighbours` that computes them, reusing its previous call's when the sets
    grew from it; its own ``max_entries``). Returns the matches (K, 2) ordered by the index in image 0."""
    n0, n1 = len(d0), len(d1)
    if n0 < 2 or n1 < 2:
        return torch.zeros((0, 2), dtype=torch.long, device=d0.device)
    k0, k1 = max(2, min(FGINN_CANDIDATES, n1)), max(2, min(FGINN_CANDIDATES, n0))
    if neighbours is not None:
        v, i, cv, ci = neighbours(d0, d1, k0, k1)
    else:
        v, i, cv, ci = blocked_neighbours(d0, d1, k0, k1, max_entries)
    j = i[:, 0]
    keep = _mutual(j, ci[0]) & (_fginn_ratio(v, i, xy1, spatial_th) <= th)
    keep &= (_fginn_ratio(cv.t(), ci.t(), xy0, spatial_th) <= th)[j]
    rows = torch.arange(n0, device=d0.device)
    return torch.stack([rows[keep], j[keep]], 1)


def needs_blocks(n0: int, n1: int, max_entries: Optional[int] = None) -> bool:
    """Whether an ``n0 x n1`` distance matrix is above :data:`MAX_DISTANCE_ENTRIES` (or ``max_entries``)."""
    return int(n0) * int(n1) > int(MAX_DISTANCE_ENTRIES if max_entries is None else max_entries)


__all__ = ["FGINN_CANDIDATES", "GrowingNeighbours", "MAX_DISTANCE_ENTRIES", "Neighbours", "blocked_neighbours", "fginn",
           "fginn_both_ways", "mnn", "needs_blocks", "nn", "smnn", "snn"]
