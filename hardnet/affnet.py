"""Affine shape of keypoints: a small learned patch network (:class:`AffNet`, Mishkin et al.,
ECCV 2018 "Repeatability is not enough", trained by :mod:`hardnet.affnet_training` on our own
patch pairs) and the classical second-moment (Baumberg) adaptation, kornia's
``PatchAffineShapeEstimator`` iterated.

Convention (everywhere in the project)
--------------------------------------
A keypoint ``(x, y, scale)`` has the **isotropic keypoint frame** of :mod:`hardnet.patches`:
the descriptor patch samples the image at ``c + r * u`` for the normalised patch coordinates
``u = (u_x, u_y)`` in ``[-1, 1]^2`` (``linspace(-1, 1, 32)`` on each axis, ``u_x`` along the
patch columns, ``u_y`` along the rows, image coordinates: x right, y down), with the centre
``c = (x, y)`` and the half-side ``r = magnification * scale * PATCH_SIZE / 2`` pixels
(``32 * scale`` px for the default magnification 2: the patch spans ``64 * scale`` px).

An **affine shape** is a 2x2 matrix ``A`` that maps the normalised patch frame to image
offsets relative to that isotropic frame: the shape-normalised patch samples the image at

    ``c + r * A @ u``.

``A`` is always returned as

* lower triangular, ``A = [[a11, 0], [a21, a22]]`` with ``a11 > 0``, ``a22 > 0``: "up is up",
  the patch's vertical axis ``(0, 1)`` goes to the image's vertical direction ``(0, a22)``
  (the shape fixes no orientation: any ``A @ R`` with a rotation ``R`` is the same ellipse
  and the lower-triangular one is chosen, kornia's ``make_upright``);
* of determinant 1: the shape keeps the area of the isotropic frame, i.e. the keypoint's
  scale (the ellipse ``{c + r A u : |u| <= 1}`` has the area of the circle of radius ``r``).

The ellipse of the region is ``A A^T`` (times ``r^2``). A blob elongated along x has
``a11 > 1 > a22``. For an image warped by an affine ``J`` (A -> B) the shapes of
corresponding points satisfy ``A_B = J / sqrt(det J) @ A_A @ Q`` for some rotation ``Q``.

**Composition with an orientation** ``theta`` (radians, the project's convention of
:mod:`hardnet.orientation`: image coordinates, from the x axis): shape first, then
orientation, as kornia composes them (``LAFAffNetShapeEstimator`` then ``LAFOrienter``,
``laf = shape @ rotation``): the full frame samples the image at

    ``c + r * A @ R(theta) @ u``,  ``R(theta) = [[cos, -sin], [sin, cos]]``,

so ``theta`` is the orientation **inside the shape-normalised patch** (estimate it on the
patch cut through ``A``). With ``A = I`` this is exactly
``hardnet.patches.extract_patches(..., orientation=theta)``. The matching kornia LAF is
``[r' A R(theta) | c]`` with ``r' = r * P / (P - 1)`` (:func:`affine_lafs`, as
:func:`hardnet.patches.patch_lafs`; kornia's angle is ``-theta``).

Estimators
----------
:class:`AffineShapeEstimator` with ``method='learned'`` runs an :class:`AffNet` on the upright
32x32 descriptor patch; ``method='moments'`` runs kornia's ``PatchAffineShapeEstimator``
(Gaussian-weighted second moment matrix ``M`` of the Sobel gradients) on the patch cut
through the current shape and updates the shape by ``S`` with ``S S^T ~ M^-1`` (the
Baumberg iteration, ``iterations`` steps from the isotropic frame), converted to the
convention above. The learned estimator iterates the same way (3 steps by default). Both limit the elongation (ratio of the ellipse axes = ``a`` of
``A A^T``'s eigenvalues ``a, 1/a``) to ``max_elongation``, keeping the axes' directions.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


from .patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, PatchEstimator, extract_patches, patch_lafs

METHODS = ("learned", "moments")
#: default limit of the elongation of an estimated shape (tilts up to ~6 are trained)
MAX_ELONGATION = 6.0


# --------------------------------------------------------------------------- shape algebra
def shape_from_params(a11: torch.Tensor, a21: torch.Tensor, a22: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` lower-triangular ``[[a11, 0], [a21, a22]]`` divided by ``sqrt(a11 a22)``
    (determinant 1); ``a11``, ``a22`` must be positive."""
    s = torch.sqrt(a11 * a22)
    z = torch.zeros_like(a11)
    return torch.stack([torch.stack([a11 / s, z], -1), torch.stack([a21 / s, a22 / s], -1)], -2)


def upright_shape(m: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The convention's representative of the ellipse of ``(N, 2, 2)`` matrices ``m``: the
    lower-triangular ``U`` with a positive diagonal and ``U U^T = m m^T / |det m|`` (the LQ
    factor of ``m``, kornia's ``make_upright``, at determinant 1)."""
    r0 = m[..., 0, :]
    r1 = m[..., 1, :]
    n0 = torch.sqrt((r0 * r0).sum(-1) + eps)
    det = torch.abs(m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]) + eps
    return shape_from_params(n0, (r1 * r0).sum(-1) / n0, det / n0)


def shape_from_moments(moments: torch.Tensor) -> torch.Tensor:
    """Shape ``A`` (convention above) of second moment matrices ``M = [[a, b], [b, c]]`` given
    as ``(N, 3)`` (or kornia's ``(N, 1, 3)``) ``(a, b, c)``: ``A A^T`` proportional to ``M^-1``
    (the frame in which the gradients' moments are isotropic), the lower Cholesky factor of
    ``M^-1 = [[c, -b], [-b, a]] / det M``."""
    m = moments.reshape(-1, 3).to(torch.float32)
    a, b, c = m[:, 0], m[:, 1], m[:, 2]
    det = torch.clamp(a * c - b * b, min=1e-20)
    c = torch.clamp(c, min=1e-20)
    return shape_from_params(torch.sqrt(c), -b / torch.sqrt(c), torch.sqrt(det / c))


def limit_elongation(shapes: torch.Tensor, max_elongation: Optional[float]) -> torch.Tensor:
    """Clamp the elongation of det-1 shapes: the eigenvalues ``l, 1/l`` (``l >= 1``) of
    ``A A^T`` to ``min(l, max_elongation)``, same axes; returned in the convention."""
    if max_elongation is None or not np.isfinite(max_elongation):
        return upright_shape(shapes)
    s = shapes @ shapes.transpose(-1, -2)
    p, q, t = s[..., 0, 0], s[..., 0, 1], s[..., 1, 1]
    half = 0.5 * (p + t)
    disc = torch.sqrt(torch.clamp(half * half - (p * t - q * q), min=0.0))
    lam = half + disc                                          # largest eigenvalue
    ang = 0.5 * torch.atan2(2.0 * q, p - t)                    # its axis
    lam_c = torch.clamp(lam, max=float(max_elongation))
    lam_c = torch.where(lam > lam_c, lam_c, lam)
    cs, sn = torch.cos(ang), torch.sin(ang)
    l1, l2 = lam_c, 1.0 / lam_c
    p2 = l1 * cs * cs + l2 * sn * sn
    q2 = (l1 - l2) * cs * sn
    t2 = l1 * sn * sn + l2 * cs * cs
    # lower Cholesky factor of [[p2, q2], [q2, t2]] (det 1)
    a11 = torch.sqrt(p2)
    clamped = shape_from_params(a11, q2 / a11, torch.sqrt(torch.clamp(t2 - q2 * q2 / p2, min=1e-12)))
    keep = (lam <= max_elongation)[..., None, None]
    return torch.where(keep, upright_shape(shapes), clamped)


def elongation(shapes: torch.Tensor) -> torch.Tensor:
    """Ratio of the ellipse axes of det-1 shapes (1 = a circle): the largest eigenvalue of ``A A^T``."""
    s = shapes @ shapes.transpose(-1, -2)
    half = 0.5 * (s[..., 0, 0] + s[..., 1, 1])
    det = s[..., 0, 0] * s[..., 1, 1] - s[..., 0, 1] * s[..., 1, 0]
    return half + torch.sqrt(torch.clamp(half * half - det, min=0.0))


def rotation_part(m: torch.Tensor) -> torch.Tensor:
    """The rotation ``Q`` of the polar decomposition ``m = Q P`` of ``(N, 2, 2)`` matrices with
    a positive determinant (the rotation closest to ``m``)."""
    ang = torch.atan2(m[..., 1, 0] - m[..., 0, 1], m[..., 0, 0] + m[..., 1, 1])
    c, s = torch.cos(ang), torch.sin(ang)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


# --------------------------------------------------------------------------- sampling
def extract_affine_patches(image: torch.Tensor, kpts: torch.Tensor, shapes: Optional[torch.Tensor] = None,
                           orientation: Optional[torch.Tensor] = None, patch_size: int = PATCH_SIZE,
                           magnification: float = DEFAULT_MAGNIFICATION) -> torch.Tensor:
    """Patches sampled at ``c + r * A @ R(theta) @ u`` (module convention): the one patch
    sampler, :func:`hardnet.patches.extract_patches` with ``shapes``. ``image`` (H, W) or
    (1, 1, H, W); ``kpts`` (N, >=3) x, y, scale; ``shapes`` (N, 2, 2); ``orientation`` (N,)
    radians. Returns (N, 1, P, P); outside the image repeats the border."""
    return extract_patches(image, kpts, patch_size, magnification, orientation=orientation, shapes=shapes)


def context_magnification(context_size: int, magnification: float = DEFAULT_MAGNIFICATION,
                          patch_size: int = PATCH_SIZE) -> float:
    """The ``magnification`` that makes ``extract_patches(..., patch_size=context_size)`` cut a
    context patch with the sample spacing of the descriptor patch (its central ``patch_size``
    samples are then the descriptor patch): spacing ``2 r / (P - 1)``, half-extent
    ``r (C - 1) / (P - 1)``."""
    return magnification * patch_size / (patch_size - 1) * (context_size - 1) / context_size


def central_patches(context: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """The central ``patch_size`` square of ``(N, 1, C, C)`` context patches (``C - P`` even)."""
    c = context.shape[-1]
    o = (c - patch_size) // 2
    return context[..., o:o + patch_size, o:o + patch_size]


def resample_context(context: torch.Tensor, frames: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Normalised patches from ``(N, 1, C, C)`` context patches (cut with
    :func:`context_magnification`) through ``(N, 2, 2)`` frames ``A`` (or ``A @ R``): sample
    ``u`` of the output is the context at ``(P - 1) / (C - 1) * A u`` in its normalised
    coordinates, i.e. the image at ``c + r A u``. Differentiable in ``frames`` and ``context``."""
    n, c = context.shape[0], context.shape[-1]
    theta = torch.cat([frames * ((patch_size - 1) / (c - 1)), frames.new_zeros(n, 2, 1)], 2)
    grid = F.affine_grid(theta, [n, 1, patch_size, patch_size], align_corners=True)
    return F.grid_sample(context, grid, mode="bilinear", padding_mode="border", align_corners=True)


def affine_lafs(kpts: torch.Tensor, shapes: Optional[torch.Tensor] = None, orientation: Optional[torch.Tensor] = None,
                magnification: float = DEFAULT_MAGNIFICATION, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """kornia LAFs ``(1, N, 2, 3)`` of the patches :func:`extract_affine_patches` cuts,
    ``[r' A R(theta) | c]``: the one LAF builder, :func:`hardnet.patches.patch_lafs` with ``shapes``."""
    return patch_lafs(kpts, orientation, magnification, patch_size, shapes=shapes)


# --------------------------------------------------------------------------- the network
class AffNet(nn.Module):
    """32x32 grey patch -> affine shape ``A`` (module convention: lower triangular, det 1).

    AffNet's design (narrower than HardNet): per-patch standardisation, six 3x3 convolutions
    16-16-32-32-64-64 (two of stride 2; batch norm without affine, ReLU), dropout, an 8x8
    convolution to 3 numbers ``x`` squashed by tanh; ``A = [[1 + x0, 0], [x1, 1 + x2]]`` (a
    positive diagonal since tanh > -1) divided by ``sqrt(det)``. The last convolution starts
    at zero, so an untrained network returns the identity. 84k parameters (width 16).
    """

    def __init__(self, width: int = 16, dropout: float = 0.25) -> None:
        super().__init__()
        w = int(width)
        self.width, self.dropout = w, float(dropout)

        def block(cin: int, cout: int, stride: int = 1) -> list:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(cout, affine=False), nn.ReLU()]

        self.features = nn.Sequential(*block(1, w), *block(w, w), *block(w, 2 * w, 2), *block(2 * w, 2 * w),
                                      *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w), nn.Dropout(self.dropout))
        self.head = nn.Conv2d(4 * w, 3, PATCH_SIZE // 4)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.8)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def check(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"AffNet expects (N, 1, {PATCH_SIZE}, {PATCH_SIZE}) patches, got {tuple(x.shape)}")

    @staticmethod
    def input_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Per-patch standardisation with detached statistics (as kornia's AffNet: gradients
        through the patch statistics make the training noisy)."""
        flat = x.reshape(len(x), -1)
        mp = flat.mean(1).detach()
        sp = flat.std(1).detach()
        return (x - mp[:, None, None, None]) / (sp[:, None, None, None] + eps)

    def raw(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` tanh outputs ``x`` (zero at initialisation)."""
        self.check(patches)
        return torch.tanh(self.head(self.features(self.input_norm(patches)))).reshape(-1, 3)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 32, 32)`` -> ``(N, 2, 2)`` shapes (lower triangular, det 1, positive diagonal)."""
        x = self.raw(patches)
        return shape_from_params(1.0 + x[:, 0], x[:, 1], 1.0 + x[:, 2])


# --------------------------------------------------------------------------- the estimator
Sampler = Callable[[torch.Tensor], torch.Tensor]


def _second_moments() -> nn.Module:
    """kornia's second-moment (Baumberg) shape of 32 px patches."""
    from kornia.feature import PatchAffineShapeEstimator
    return PatchAffineShapeEstimator(PATCH_SIZE)


class AffineShapeEstimator(PatchEstimator):
    """Affine shape of keypoints: ``estimate(image, kpts) -> (N, 2, 2)`` (module convention).

    ``method='learned'`` runs an :class:`AffNet`, ``'moments'`` kornia's
    ``PatchAffineShapeEstimator`` (the Baumberg iteration). Each of ``iterations`` steps (3
    for learned, 4 for moments by default) looks at the patch cut through the current shape
    and composes its estimate ``S`` on the right: ``A <- upright(A @ S)`` (one step from the
    isotropic frame is the plain estimate on the upright patch, what AffNet is trained on;
    iterating the shipped AffNet helps on validation, docs/hardnet.md). The elongation is
    limited to ``max_elongation`` (None: unlimited).
    """

    def __init__(self, method: str = "learned", model: Optional[AffNet] = None,
                 device: Optional[Union[str, torch.device]] = None, batch_size: int = 1024,
                 magnification: float = DEFAULT_MAGNIFICATION, iterations: Optional[int] = None,
                 max_elongation: Optional[float] = MAX_ELONGATION) -> None:
        super().__init__("affine shape", METHODS, method, model, "an AffNet (hardnet.weights.load_affnet)",
                         _second_moments, device, batch_size, magnification)
        self.iterations = int(iterations if iterations is not None else (3 if method == "learned" else 4))
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        self.max_elongation = max_elongation

    @torch.no_grad()
    def shapes_of_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 32, 32)`` patches -> ``(N, 2, 2)`` shapes of their content in the patch frame
        (one step: the estimate on these patches, no resampling), elongation limited."""
        if self.method == "learned":
            s = self.model(patches.to(self.device))
        else:
            s = shape_from_moments(self.model(patches.to(self.device).float()))
        return limit_elongation(s, self.max_elongation)

    @torch.no_grad()
    def iterate(self, sampler: Sampler, n: int, device=None) -> torch.Tensor:
        """``iterations`` steps from the identity: ``sampler(frames) -> (N, 1, 32, 32)`` patches
        cut through the current ``(N, 2, 2)`` frames (from an image or a context patch)."""
        a = torch.eye(2, device=device or self.device).expand(n, 2, 2).clone()
        for _ in range(self.iterations):
            s = self.shapes_of_patches(sampler(a))
            a = limit_elongation(a @ s.to(a), self.max_elongation)
        return a

    @torch.no_grad()
    def estimate(self, image: np.ndarray, kpts: np.ndarray) -> np.ndarray:
        """``image``: (H, W) float grey; ``kpts``: (N, >=3) x, y, scale (score ignored) ->
        (N, 2, 2) float32 shapes."""
        n = len(kpts)
        out = np.zeros((n, 2, 2), dtype=np.float32)
        if n == 0:
            return out
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        k = torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)).to(self.device)
        for i in range(0, n, self.batch_size):
            kb = k[i:i + self.batch_size]
            a = self.iterate(lambda f: extract_affine_patches(img, kb, f, magnification=self.magnification),
                             len(kb), self.device)
            out[i:i + len(kb)] = a.float().cpu().numpy()
        return out

    def patches(self, image: np.ndarray, kpts: np.ndarray, orientation: Optional[np.ndarray] = None) -> torch.Tensor:
        """Shape-normalised (and, with ``orientation`` in degrees, oriented) 32x32 patches of ``kpts``."""
        shapes = torch.from_numpy(self.estimate(image, kpts))
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        ori = None if orientation is None else torch.deg2rad(torch.as_tensor(orientation, dtype=torch.float32))
        return extract_affine_patches(img, torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)), shapes, ori,
                                      magnification=self.magnification)


__all__ = ["AffNet", "AffineShapeEstimator", "METHODS", "MAX_ELONGATION", "affine_lafs", "central_patches",
           "context_magnification", "elongation", "extract_affine_patches", "limit_elongation", "resample_context",
           "rotation_part", "shape_from_moments", "shape_from_params", "upright_shape"]
