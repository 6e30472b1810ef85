"""Patch extraction around keypoints: THE one place where descriptor patches are cut,
shared by extraction, training and benchmarks (and :class:`PatchEstimator`, the common part
of the estimators that run on these patches)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from keynet.base.device import resolve_device

PATCH_SIZE = 32
# The official extraction samples a 32x32 grid spanning 64 * scale pixels around each
# point (its ``--scale-factor`` 2 times the patch half-size 32 times the keypoint scale).
DEFAULT_MAGNIFICATION = 2.0


def extract_patches(image: torch.Tensor, kpts: torch.Tensor, patch_size: int = PATCH_SIZE,
                    magnification: float = DEFAULT_MAGNIFICATION,
                    orientation: Optional[torch.Tensor] = None,
                    shapes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bilinearly sample one ``patch_size`` square patch per keypoint.

    Args:
        image: (H, W) or (1, 1, H, W) float image.
        kpts: (N, >=3) x, y, scale in pixels of ``image``.
        magnification: the patch covers ``magnification * patch_size * scale`` pixels
            (64 * scale for the defaults), as the official extraction.
        orientation: optional (N,) angles in radians; the patch is rotated with the point.
        shapes: optional (N, 2, 2) affine shapes ``A`` (:mod:`hardnet.affnet`'s convention):
            the patch samples ``c + r * A @ R(orientation) @ u`` (shape first, then orientation,
            as kornia composes them); ``None``: the isotropic frame.
    Returns:
        (N, 1, patch_size, patch_size) patches. Samples outside the image repeat the border.
    """
    img = image.reshape(1, 1, *image.shape[-2:]).float()
    h, w = img.shape[-2:]
    n = kpts.shape[0]
    if n == 0:
        return img.new_zeros((0, 1, patch_size, patch_size))
    k = kpts.to(img.device, torch.float32)
    # grid of offsets: linspace(-1, 1) * magnification * scale * patch_size / 2 (official)
    lin = torch.linspace(-1.0, 1.0, patch_size, device=img.device)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    half = magnification * k[:, 2] * patch_size / 2.0  # (N,)
    ox = gx[None] * half[:, None, None]
    oy = gy[None] * half[:, None, None]
    if orientation is not None:
        c = torch.cos(orientation.to(k))[:, None, None]
        s = torch.sin(orientation.to(k))[:, None, None]
        ox, oy = c * ox - s * oy, s * ox + c * oy
    if shapes is not None:  # A @ (R u): the oriented offsets through the shape
        a = shapes.to(k).reshape(n, 2, 2)
        ox, oy = (a[:, 0, 0, None, None] * ox + a[:, 0, 1, None, None] * oy,
                  a[:, 1, 0, None, None] * ox + a[:, 1, 1, None, None] * oy)
    x = k[:, 0, None, None] + ox
    y = k[:, 1, None, None] + oy
    # align_corners=True: normalised -1 / +1 are the centres of the first / last pixel
    grid = torch.stack([2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0], -1)
    # one sampling call over a tall grid: no per-patch copy of the image
    out = F.grid_sample(img, grid.reshape(1, n * patch_size, patch_size, 2), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.reshape(n, 1, patch_size, patch_size)


def patch_lafs(kpts: torch.Tensor, orientation: Optional[torch.Tensor] = None,
               magnification: float = DEFAULT_MAGNIFICATION, patch_size: int = PATCH_SIZE,
               shapes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """kornia local affine frames ``(1, N, 2, 3)`` of the patches :func:`extract_patches` cuts:
    THE one LAF builder of the project (extraction, matching, benchmarks).

    Centre ``(x, y)``, frame ``half * A @ R(orientation)``: the affine ``shapes`` ``A`` ((N, 2, 2),
    identity when ``None``), the rotation by ``orientation`` (radians, image coordinates;
    kornia's ``get_laf_orientation`` of an upright-shaped frame is ``-orientation`` in degrees,
    kornia's sign convention) and the half-size ``magnification * scale * patch_size / 2 * P /
    (P - 1)``: kornia samples pixel centres at ``+-(P - 1) / P`` of the frame
    (``align_corners=False``) where we sample the ends of ``+-magnification * scale *
    patch_size / 2``, so that ``kornia.feature.extract_patches_simple(img, lafs, P)`` gives our
    patches.
    """
    k = kpts.to(torch.float32)
    n = k.shape[0]
    half = magnification * k[:, 2] * patch_size / 2.0 * patch_size / (patch_size - 1)
    a = orientation.to(k) if orientation is not None else torch.zeros(n, dtype=k.dtype, device=k.device)
    c, s = torch.cos(a) * half, torch.sin(a) * half
    laf = torch.stack([torch.stack([c, -s, k[:, 0]], -1), torch.stack([s, c, k[:, 1]], -1)], -2)
    if shapes is not None:
        laf = torch.cat([shapes.to(k).reshape(n, 2, 2) @ laf[:, :, :2], laf[:, :, 2:]], 2)
    return laf[None]


def lafs_to_keypoints(lafs: torch.Tensor, magnification: float = DEFAULT_MAGNIFICATION,
                      patch_size: int = PATCH_SIZE) -> tuple:
    """Inverse of :func:`patch_lafs` for similarity frames: ``(kpts (N, 3) x, y, scale,
    orientation (N,) radians)``."""
    a = lafs.reshape(-1, 2, 3).to(torch.float32)
    half = torch.sqrt(torch.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]))
    scale = half / (magnification * patch_size / 2.0 * patch_size / (patch_size - 1))
    ori = torch.atan2(a[:, 1, 0], a[:, 0, 0])
    return torch.stack([a[:, 0, 2], a[:, 1, 2], scale], 1), ori


class PatchEstimator:
    """What the patch estimators (orientation, affine shape) share: a ``method`` among
    ``methods`` (the first runs the given ``model``, the second the classical network that
    ``classical()`` builds), the device, the patches per network call and the patch
    magnification."""

    def __init__(self, what: str, methods: Sequence[str], method: str, model: Optional[torch.nn.Module],
                 needs: str, classical: Callable[[], torch.nn.Module],
                 device: Optional[Union[str, torch.device]], batch_size: int, magnification: float) -> None:
        if method not in methods:
            raise ValueError(f"{what} method must be one of {tuple(methods)}, got {method!r}")
        if method == methods[0] and model is None:
            raise ValueError(f"{what} method '{methods[0]}' needs {needs}")
        self.method = method
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        if method == methods[1]:
            self.model = classical().to(self.device).eval()
        self.batch_size = int(batch_size)
        self.magnification = magnification
