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

from typing import Optional, Tuple

import torch

#: Above this many distances (256 MB of float32: two sets of 8192 descriptors) the matching
#: stage uses the blocked matchers; each block holds at most this many.
MAX_DISTANCE_ENTRIES = 1 << 26
#: kornia's FGINN candidates: the second neighbour is looked for among the nearest 10.
FGINN_CANDIDATES = 10

Result = Tuple[torch.Tensor, torch.Tensor]


def _no_match(d: torch.Tensor) -> Result:
    return d.new_zeros(0), torch.zeros((0, 2), dtype=torch.long, device=d.device)


def blocked_neighbours(d0: torch.Tensor, d1: torch.Tensor, k: int, k_col: int = 1,
                       max_entries: int = MAX_DISTANCE_ENTRIES) -> Tuple[torch.Tensor, torch.Tensor,
                                                                         torch.Tensor, torch.Tensor]:
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
        both_v = torch.cat([col_vals, cv])
        both_i = torch.cat([col_idx, ci + start])
        order = torch.sort(both_v, dim=0, stable=True).indices[:k_col]  # earlier rows win ties, as one topk
        col_vals, col_idx = torch.gather(both_v, 0, order), torch.gather(both_i, 0, order)
    return row_vals, row_idx, col_vals, col_idx


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
                    spatial_th: float, max_entries: int = MAX_DISTANCE_ENTRIES) -> torch.Tensor:
    """The mutual nearest neighbours that pass FGINN's ratio test seen from both images (kornia's
    ``match_fginn(d0, d1, ..., mutual=True)`` and ``match_fginn(d1, d0, ..., mutual=True)``,
    their common matches) from one pass over the distances: the rows' and the columns' nearest
    candidates of one ``cdist(d0, d1)``, in blocks. Returns the matches (K, 2) ordered by the
    index in image 0."""
    n0, n1 = len(d0), len(d1)
    if n0 < 2 or n1 < 2:
        return torch.zeros((0, 2), dtype=torch.long, device=d0.device)
    k0, k1 = max(2, min(FGINN_CANDIDATES, n1)), max(2, min(FGINN_CANDIDATES, n0))
    v, i, cv, ci = blocked_neighbours(d0, d1, k0, k1, max_entries)
    j = i[:, 0]
    keep = _mutual(j, ci[0]) & (_fginn_ratio(v, i, xy1, spatial_th) <= th)
    keep &= (_fginn_ratio(cv.t(), ci.t(), xy0, spatial_th) <= th)[j]
    rows = torch.arange(n0, device=d0.device)
    return torch.stack([rows[keep], j[keep]], 1)


def needs_blocks(n0: int, n1: int, max_entries: Optional[int] = None) -> bool:
    """Whether an ``n0 x n1`` distance matrix is above :data:`MAX_DISTANCE_ENTRIES` (or ``max_entries``)."""
    return int(n0) * int(n1) > int(MAX_DISTANCE_ENTRIES if max_entries is None else max_entries)


__all__ = ["FGINN_CANDIDATES", "MAX_DISTANCE_ENTRIES", "blocked_neighbours", "fginn", "fginn_both_ways", "mnn",
           "needs_blocks", "nn",
           "smnn", "snn"]
