"""Synthetic extreme-viewpoint pairs (EVD-like) made from HPatches-layout sequences: image k
tilted (ASIFT's tilt, anti-aliased) against image 1, with the exact homography."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .wide_baseline_common import PathLike, _read_matrix, read_image


@dataclass(frozen=True, eq=False)
class ExtremePair:
    """A synthetic extreme-view pair: ``img2`` shows ``img1``'s scene where ``H`` maps it."""

    name: str
    img1: np.ndarray
    img2: np.ndarray
    H: np.ndarray  # image-1 pixels -> img2 pixels
    k: int
    tilt: float
    direction_deg: float


def tilt_matrix(tilt: float, direction_deg: float = 0.0) -> np.ndarray:
    """The 3x3 affine tilt ``I + (1/t - 1) d d^T``: lengths along ``d = (cos a, sin a)`` (image
    axes: x right, y down) shrink by ``t``, those across ``d`` are kept (ASIFT's tilt)."""
    if not (math.isfinite(tilt) and tilt >= 1.0):
        raise ValueError(f"tilt must be a finite number >= 1, got {tilt!r}")
    a = math.radians(direction_deg)
    d = np.array([math.cos(a), math.sin(a)])
    A = np.eye(3)
    A[:2, :2] += (1.0 / tilt - 1.0) * np.outer(d, d)
    return A


def _directional_blur(img: np.ndarray, sigma: float, direction_deg: float) -> np.ndarray:
    """Gaussian blur of std ``sigma`` along the direction (0.5 px across, so any angle is smooth)."""
    a = math.radians(direction_deg)
    d = np.array([math.cos(a), math.sin(a)])
    r = int(math.ceil(3 * sigma))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    along = xx * d[0] + yy * d[1]
    across = -xx * d[1] + yy * d[0]
    kernel = np.exp(-0.5 * (along / sigma) ** 2 - 0.5 * (across / 0.5) ** 2)
    kernel /= kernel.sum()
    out = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(out), 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out.astype(img.dtype)


def make_extreme_pair(seq_dir: PathLike, k: int = 2, tilt: float = 4.0, direction_deg: float = 0.0,
                      antialias: bool = True) -> ExtremePair:
    """A deterministic EVD-like pair from an HPatches-layout sequence (``1.ppm``..``6.ppm``,
    ``H_1_k`` mapping image-1 pixels to image k): ``img1`` = image 1 and ``img2`` = image k
    squeezed by ``tilt`` (e.g. 4, 6, 8) along ``direction_deg`` (:func:`tilt_matrix`), on a
    canvas just holding the whole tilted image k; ``H = T A H_1_k`` (``T`` the shift onto the
    canvas), normalised to ``H[2,2] = 1``.

    With ``antialias`` image k is first blurred along the squeeze by ``0.8 sqrt(t^2 - 1)`` px
    (ASIFT's anti-aliasing filter), a symmetric kernel, so point positions are unchanged.
    """
    d = Path(seq_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {d}")
    if int(k) != k or not 2 <= k <= 6:
        raise ValueError(f"k must be an image index 2..6, got {k!r}")
    k = int(k)
    A = tilt_matrix(float(tilt), float(direction_deg))
    img1 = read_image(d / "1.ppm")
    imgk = read_image(d / f"{k}.ppm")
    H1k = _read_matrix(d / f"H_1_{k}", 3, 3, "HPatches homography")
    hk, wk = imgk.shape[:2]
    corners = np.array([[0, 0], [wk - 1, 0], [wk - 1, hk - 1], [0, hk - 1]], dtype=np.float64)
    warped = corners @ A[:2, :2].T
    lo = np.floor(warped.min(axis=0))
    hi = warped.max(axis=0)
    size = (int(math.ceil(hi[0] - lo[0])) + 1, int(math.ceil(hi[1] - lo[1])) + 1)  # (w, h)
    T = np.array([[1.0, 0.0, -lo[0]], [0.0, 1.0, -lo[1]], [0.0, 0.0, 1.0]])
    M = T @ A
    src = imgk
    if antialias and tilt > 1.0:
        src = _directional_blur(imgk, 0.8 * math.sqrt(tilt * tilt - 1.0), direction_deg)
    img2 = cv2.warpPerspective(src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    H = M @ H1k
    H = H / H[2, 2]
    name = f"{d.name}_1_{k}_t{tilt:g}_d{direction_deg:g}"
    return ExtremePair(name, img1, img2, H, k, float(tilt), float(direction_deg))
