"""The HardNet loss (Mishchuk et al. 2017): triplet margin with the hardest in-batch negative.

For a batch of matching descriptor pairs ``(a_i, p_i)``, ``D[i, j] = ||a_i - p_j||``; the
positive distance is ``D[i, i]``; the hardest negative of pair ``i`` is the smallest
``D[i, j]`` (j != i) and, with anchor swap, also the smallest ``D[j, i]`` (the positive
used as anchor); the loss is ``mean(max(0, margin + D[i, i] - min_neg_i))``.

As the official code, distances are ``sqrt(squared distance + 1e-6)`` and negatives
closer than 0.008 (the same patch appearing twice in a batch) are ignored. In addition
an optional boolean ``ignore`` matrix removes chosen (i, j) entries from the negatives;
the trainer uses it for pairs of the same photo whose points are a few pixels apart
(:func:`same_point_mask`), which are the same scene point, not negatives.
"""
from __future__ import annotations

from typing import Optional

import torch

DIST_EPS = 1e-6
DUPLICATE_DIST = 0.008
_BIG = 10.0  # added to excluded entries; larger than any distance of unit vectors (<= 2)


def distance_matrix(a: torch.Tensor, p: torch.Tensor, eps: float = DIST_EPS) -> torch.Tensor:
    """``D[i, j] = sqrt(||a_i - p_j||^2 + eps)`` (squared form clamped at 0)."""
    sq = (a * a).sum(1, keepdim=True) + (p * p).sum(1)[None] - 2.0 * a @ p.t()
    return torch.sqrt(sq.clamp_min(0.0) + eps)


def hardest_negatives(dist: torch.Tensor, anchor_swap: bool = True,
                      ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hardest negative distance of each pair from a distance matrix (diagonal = positives)."""
    n = dist.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    excluded = eye | (dist < DUPLICATE_DIST)
    if ignore is not None:
        excluded = excluded | ignore.to(dist.device, torch.bool)
    neg = dist + excluded.to(dist.dtype) * _BIG
    min_neg = neg.min(1).values
    if anchor_swap:
        min_neg = torch.minimum(min_neg, neg.min(0).values)
    return min_neg


def hardnet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = 1.0,
                 anchor_swap: bool = True, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean triplet margin loss of (N, D) matching descriptors with hardest in-batch negatives."""
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(f"anchor and positive must be (N, D) of equal shape, got {tuple(anchor.shape)} "
                         f"and {tuple(positive.shape)}")
    if anchor.shape[0] < 2:
        raise ValueError("the HardNet loss needs at least 2 pairs in a batch")
    dist = distance_matrix(anchor, positive)
    pos = dist.diagonal()
    min_neg = hardest_negatives(dist, anchor_swap, ignore)
    return torch.clamp(margin + pos - min_neg, min=0.0).mean()


def same_point_mask(image: torch.Tensor, xy: torch.Tensor, scale: torch.Tensor,
                    radius_per_scale: float = 4.0) -> torch.Tensor:
    """(N, N) boolean: pairs i != j from the same photo whose view-A points are closer than
    ``radius_per_scale * max(scale_i, scale_j)`` pixels (their 64*scale patches overlap by
    more than ~90%): near-duplicates that must not be used as negatives."""
    same = image[:, None] == image[None, :]
    d = torch.cdist(xy.double(), xy.double())
    r = radius_per_scale * torch.maximum(scale[:, None], scale[None, :]).double()
    mask = same & (d < r)
    mask.fill_diagonal_(False)
    return mask
