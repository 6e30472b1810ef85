"""AffNet's loss and the geometry of its normalised pairs, with the validation scores of
shapes (the learned ones, the identity and the second moments).

Loss (the paper's "hard negative constant"): AffNet estimates the shape ``A_A``, ``A_B`` on
each view's central 32x32 patch; each view's context is resampled through its shape to the
shape-normalised 32x32 patch (``grid_sample``, differentiable); B's frame is also turned by
the rotation ``Q`` that aligns the two normalised frames given the ground truth (the
rotation part of ``A_B^-1 J A_A``, a constant: the shape is "up-is-up" and carries no
orientation). The frozen HardNet (``pretrained_nets/hardnet.pt``, eval mode, no gradient into
its weights, gradient through its input) describes both; with ``d`` the descriptor
distance and ``n*`` the hardest in-batch negative (anchor swap, same-point negatives
ignored) ``loss = mean(max(0, margin + d(a, p) - d(a, n*)))`` where ``d(a, n*)`` is detached.

Validation (pairs from held-out photos, the same ``Q`` alignment for every method): mean
positive descriptor distance, FPR95 (negatives: the positive of another photo, and of
another point of the same photo), NN accuracy among 1000, and the residual tilt (elongation
of ``A_B^-1 J A_A / sqrt(det J)``: 1 when the two shapes agree with the ground truth), for the
learned shapes; the identity shape and kornia's second-moment (Baumberg) estimator are
scored once on the same pairs for reference. ``best.pt`` has the best ``val_metric``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn


from .affnet import AffineShapeEstimator, elongation, resample_context, rotation_part
from .loss import distance_matrix, hardest_negatives
from .training import fpr_at_95

def hard_negative_constant_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = 1.0,
                                anchor_swap: bool = True, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """AffNet's HardNegC loss: ``mean(max(0, margin + d(a_i, p_i) - d_neg_i))`` with ``d_neg_i``
    the hardest in-batch negative distance (:func:`hardnet.loss.hardest_negatives`) treated
    as a constant (no gradient)."""
    if anchor.shape != positive.shape or anchor.dim() != 2 or anchor.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) anchors and positives of equal shape, got {tuple(anchor.shape)} and "
                         f"{tuple(positive.shape)}")
    dist = distance_matrix(anchor, positive)
    neg = hardest_negatives(dist, anchor_swap, ignore).detach()
    return torch.clamp(margin + dist.diagonal() - neg, min=0.0).mean()


def to_float(patches: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, S, S) -> float (N, 1, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(patches)).to(device).float().div_(255.0)[:, None]


def normalised_jacobians(jac: torch.Tensor) -> torch.Tensor:
    """``J / sqrt(det J)`` (the shape-level map between the views' isotropic frames)."""
    det = (jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]).abs()
    return jac / torch.sqrt(det)[:, None, None]


def aligned_frames(shape_a: torch.Tensor, shape_b: torch.Tensor, jac_n: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """B's sampling frame ``A_B Q`` (``Q``: the rotation part of ``A_B^-1 J_n A_A``, detached)
    and the residual map ``A_B^-1 J_n A_A`` itself."""
    resid = torch.linalg.solve(shape_b, jac_n @ shape_a)
    return shape_b @ rotation_part(resid.detach()), resid


def normalised_pair(ctx_a: torch.Tensor, ctx_b: torch.Tensor, shape_a: torch.Tensor, shape_b: torch.Tensor,
                    jac_n: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape-normalised 32x32 patches of both views (B turned onto A by ``Q``) and the residual."""
    frame_b, resid = aligned_frames(shape_a, shape_b, jac_n)
    return resample_context(ctx_a, shape_a), resample_context(ctx_b, frame_b), resid


@torch.no_grad()
def score_shapes(hardnet: nn.Module, val: Dict[str, np.ndarray], idx: np.ndarray, partner: np.ndarray,
                 partner_same: np.ndarray, shapes_a: torch.Tensor, shapes_b: torch.Tensor, device,
                 block: int = 1000, batch: int = 1000) -> Dict[str, float]:
    """Descriptor metrics of the pairs ``idx`` normalised by the given shapes (CPU tensors)."""
    da, db, res = [], [], []
    for i in range(0, len(idx), batch):
        bi = idx[i:i + batch]
        ca, cb = to_float(val["ctx_a"][bi], device), to_float(val["ctx_b"][bi], device)
        jn = normalised_jacobians(torch.from_numpy(np.asarray(val["jac"][bi])).to(device))
        pa, pb, r = normalised_pair(ca, cb, shapes_a[i:i + batch].to(device), shapes_b[i:i + batch].to(device), jn)
        da.append(hardnet(pa).cpu())
        db.append(hardnet(pb).cpu())
        res.append(elongation(r).cpu())
    da, db, resid = torch.cat(da), torch.cat(db), torch.cat(res).numpy()
    pos = (da - db).norm(dim=1).numpy()
    img = val["image"][idx]
    keep = img[partner] != img
    neg = (da - db[partner]).norm(dim=1).numpy()[keep]
    has = partner_same >= 0
    neg_same = (da[has] - db[partner_same[has]]).norm(dim=1).numpy()
    correct, total = 0, 0
    for i in range(0, len(idx), block):
        a, b = da[i:i + block], db[i:i + block]
        if len(a) >= 2:
            correct += int((torch.cdist(a, b).argmin(1) == torch.arange(len(a))).sum())
            total += len(a)
    tilt = val["tilt"][idx]
    high = tilt >= 3.0
    return {"fpr95": fpr_at_95(pos, neg), "fpr95_same_photo": fpr_at_95(pos, neg_same),
            "nn_acc": correct / max(total, 1), "pos_dist": float(pos.mean()),
            "pos_dist_tilt3": float(pos[high].mean()) if high.any() else float("nan"),
            "residual_tilt": float(np.median(resid)), "residual_tilt_tilt3": float(np.median(resid[high]))
            if high.any() else float("nan")}


@torch.no_grad()
def estimator_shapes(est: AffineShapeEstimator, ctx: np.ndarray, device, batch: int = 1000) -> torch.Tensor:
    """Shapes of the context patches' keypoints by ``est`` (its iterations resample the context)."""
    out = []
    for i in range(0, len(ctx), batch):
        c = to_float(ctx[i:i + batch], device)
        out.append(est.iterate(lambda f: resample_context(c, f), len(c), device).cpu())
    return torch.cat(out) if out else torch.zeros((0, 2, 2))


def shape_stats(sa: torch.Tensor, sb: torch.Tensor) -> Dict[str, float]:
    e = torch.cat([elongation(sa), elongation(sb)]).numpy()
    return {"median_elongation": float(np.median(e)), "share_elongation_2": float(np.mean(e >= 2.0))}


