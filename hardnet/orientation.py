"""Keypoint orientation: a small learned patch network (:class:`OriNet`, trained by
``keynet train-orientation`` on our own patch pairs) and the classical dominant gradient
orientation (SIFT's histogram, kornia's ``PatchDominantGradientOrientation``).

Convention, everywhere in the project: an orientation is an angle in **degrees** in
``[0, 360)``, in image coordinates (x right, y down) from the x axis: OpenCV's
``KeyPoint.angle`` (clockwise on screen). A descriptor patch cut at orientation ``a`` has
its x axis along ``(cos a, sin a)`` in the image (:func:`hardnet.patches.extract_patches`),
so that the same scene patch is cut from an image and from a rotated copy of it. kornia's
LAF angle is the negative of ours (:func:`keynet.features.to_laf` converts).

Both estimators look at the upright descriptor patch of the keypoint (32x32 samples over
``64 * scale`` pixels, the same support as HardNet).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


from .patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, PatchEstimator, extract_patches

METHODS = ("learned", "gradient")


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``(N,)`` radians -> ``(N, 2, 2)`` rotations ``[[c, -s], [s, c]]`` (image coordinates)."""
    c, s = torch.cos(angles), torch.sin(angles)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotate_patches(patches: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the content of ``(N, 1, P, P)`` patches about their centre by ``angles``
    (``(N,)`` radians, image coordinates: the orientation of the content grows by the angle).
    Samples from outside the patch repeat its border (the orientation network masks them)."""
    c, s = torch.cos(angles), torch.sin(angles)
    z = torch.zeros_like(c)
    # output pixel u samples the input at R(-angle) u
    theta = torch.stack([torch.stack([c, s, z], -1), torch.stack([-s, c, z], -1)], -2)
    grid = F.affine_grid(theta, list(patches.shape), align_corners=True)
    return F.grid_sample(patches, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _disc(size: int, sigma: Optional[float] = None) -> torch.Tensor:
    """A disc of radius ``size / 2`` (soft edge of one pixel), times a Gaussian of ``sigma`` if given."""
    r = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0)
    d = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    w = torch.clamp(size / 2.0 - d, 0.0, 1.0)
    if sigma is not None:
        w = w * torch.exp(-0.5 * (d / sigma) ** 2)
    return w


class OriNet(nn.Module):
    """32x32 grey patch -> orientation (a 2-vector whose angle is the orientation).

    Three convolutions turn the patch (standardised, then masked to its inscribed disc so
    that rotating it brings no new pixels in) into an 8x8 field of 2-vectors, summed with a
    Gaussian weight. The output is averaged over the four 90-degree rotations of the input,
    each rotated back, so the estimate is exactly equivariant to 90-degree rotations
    (``c4=True``). 14.4k parameters.
    """

    def __init__(self, width: int = 16, c4: bool = True) -> None:
        super().__init__()
        w = int(width)
        self.width, self.c4 = w, bool(c4)
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2, 1),
        )
        self.register_buffer("input_mask", _disc(PATCH_SIZE), persistent=False)
        self.register_buffer("field_weight", _disc(PATCH_SIZE // 4, sigma=PATCH_SIZE / 8.0), persistent=False)

    @staticmethod
    def check(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"OriNet expects (N, 1, {PATCH_SIZE}, {PATCH_SIZE}) patches, got {tuple(x.shape)}")

    def _vector(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return (f * self.field_weight).sum((-2, -1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 32, 32)`` -> ``(N, 2)`` vectors (x, y) in image coordinates."""
        self.check(patches)
        m = self.input_mask
        flat = patches.reshape(len(patches), -1)
        wm = m.reshape(1, -1)
        mean = (flat * wm).sum(1) / wm.sum()
        std = torch.sqrt(((flat - mean[:, None]) ** 2 * wm).sum(1) / wm.sum() + 1e-6)
        x = (patches - mean[:, None, None, None]) / std[:, None, None, None] * m
        if not self.c4:
            return self._vector(x)
        # rot90 (k=1 on (H, W)) turns the content by -90 degrees in image coordinates; the
        # vector of the k-th copy is turned back by +90 k degrees, so the sum is equivariant.
        n = len(x)
        v = self._vector(torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]))
        out = v[:n].clone()
        out = out + torch.stack([-v[n:2 * n, 1], v[n:2 * n, 0]], 1)       # +90: (x, y) -> (-y, x)
        out = out + (-v[2 * n:3 * n])                                     # 180
        out = out + torch.stack([v[3 * n:, 1], -v[3 * n:, 0]], 1)          # 270: (x, y) -> (y, -x)
        return out / 4.0

    def angle(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N,)`` orientation in radians (image coordinates)."""
        v = self(patches)
        return torch.atan2(v[:, 1], v[:, 0])


def _gradient_rule() -> nn.Module:
    """kornia's dominant gradient orientation of 32 px patches (SIFT's rule)."""
    from kornia.feature import PatchDominantGradientOrientation
    return PatchDominantGradientOrientation(PATCH_SIZE)


class OrientationEstimator(PatchEstimator):
    """Orientation of keypoints: ``estimate(image, kpts) -> (N,)`` degrees in ``[0, 360)``.

    ``method='learned'`` runs an :class:`OriNet`; ``'gradient'`` the dominant gradient
    orientation (kornia, 36-bin histogram with Gaussian weighting, SIFT's rule).
    """

    def __init__(self, method: str = "learned", model: Optional[OriNet] = None,
                 device: Optional[Union[str, torch.device]] = None, batch_size: int = 1024,
                 magnification: float = DEFAULT_MAGNIFICATION) -> None:
        super().__init__("orientation", METHODS, method, model, "an OriNet (hardnet.load_orinet)", _gradient_rule,
                         device, batch_size, magnification)

    @torch.no_grad()
    def angles_of_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 32, 32)`` upright patches -> ``(N,)`` radians."""
        if self.method == "learned":
            return self.model.angle(patches)
        return -self.model(patches)  # kornia's angles are the negative of ours

    @torch.no_grad()
    def estimate(self, image: np.ndarray, kpts: np.ndarray, shapes: Optional[np.ndarray] = None) -> np.ndarray:
        """``image``: (H, W) float grey; ``kpts``: (N, >=3) x, y, scale -> (N,) float32 degrees.
        ``shapes``: optional (N, 2, 2) affine shapes (:mod:`hardnet.affnet`): the orientation
        is estimated on the shape-normalised patch (shape first, then orientation, as kornia
        composes them), i.e. it is the angle inside the frame ``A``."""
        n = len(kpts)
        out = np.zeros(n, dtype=np.float32)
        if n == 0:
            return out
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        k = torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)).to(self.device)
        shp = None if shapes is None else torch.from_numpy(
            np.asarray(shapes, dtype=np.float32).reshape(n, 2, 2)).to(self.device)
        for i in range(0, n, self.batch_size):
            p = extract_patches(img, k[i:i + self.batch_size], magnification=self.magnification,
                                shapes=None if shp is None else shp[i:i + self.batch_size])
            a = self.angles_of_patches(p)
            out[i:i + len(p)] = torch.rad2deg(a).remainder(360.0).float().cpu().numpy()
        return np.mod(out, 360.0).astype(np.float32)

