"""Homography geometry shared by the whole project (benchmark and training).

Conventions
-----------
* Points are ``(N, C)`` float arrays whose first columns are ``x, y`` (column, row,
  in pixels, origin at the centre of the top-left pixel), optionally followed by a
  ``scale`` column and any further columns (score, ...), which are carried unchanged.
* ``H`` maps homogeneous pixel coordinates of one image to another:
  ``[x', y', w']^T = H [x, y, 1]^T``; HPatches' ``H_1_k`` maps image 1 to image k.
* Masks are 2-D boolean arrays indexed ``mask[row, col]`` = ``mask[y, x]``.

Stable public names (imported by the training code): :func:`read_homography`,
:func:`invert_homography`, :func:`local_affine`, :func:`transfer_scale`,
:func:`warp_points`, :func:`remove_border`, :func:`common_region_masks`,
:func:`rounded_pixel_index`, :func:`points_in_mask`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]

#: Added to ``scale**2`` before the scale transfer, as in the official code
#: (``np.finfo(np.float32).eps``); it only matters for scales near 0.
SCALE_EPS = float(np.finfo(np.float32).eps)


class HomographyError(ValueError):
    """A homography file or matrix is unusable (missing, malformed, NaN, singular)."""


def read_homography(path: PathLike) -> np.ndarray:
    """Read an HPatches homography text file (3 rows of 3 numbers) as a float64 3x3 array.

    The matrix is returned exactly as written (not normalised), like the official reader.
    Raises :class:`HomographyError` naming the file if it is missing, malformed,
    non-finite or singular.
    """
    p = Path(path)
    if not p.is_file():
        raise HomographyError(f"homography file not found: {p}")
    try:
        rows = [line.split() for line in p.read_text().splitlines() if line.strip()]
        h = np.array([[float(v) for v in row[:3]] for row in rows[:3]], dtype=np.float64)
    except ValueError as exc:
        raise HomographyError(f"cannot parse homography file {p}: {exc}") from None
    if h.shape != (3, 3):
        raise HomographyError(f"homography file {p} must hold 3 rows of 3 numbers, got {h.shape}")
    if not np.isfinite(h).all():
        raise HomographyError(f"homography file {p} contains NaN or inf")
    if abs(np.linalg.det(h)) < 1e-12 * max(1.0, float(np.abs(h).max()) ** 3):
        raise HomographyError(f"homography in {p} is singular")
    return h


def invert_homography(h: np.ndarray) -> np.ndarray:
    """Inverse of ``h`` normalised so that its [2, 2] entry is 1 (the official convention)."""
    inv = np.linalg.inv(np.asarray(h, dtype=np.float64))
    return inv / inv[2, 2]


def _project(h: np.ndarray, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = xy[:, 0], xy[:, 1]
    u = h[0, 0] * x + h[0, 1] * y + h[0, 2]
    v = h[1, 0] * x + h[1, 1] * y + h[1, 2]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return u, v, w


def local_affine(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Jacobian of the projective map ``h`` at each point: ``(N, 2, 2)`` float64.

    ``J = [[dx'/dx, dx'/dy], [dy'/dx, dy'/dy]]`` with ``x' = u/w, y' = v/w``: the local
    affine approximation of the homography (the official ``getAff``).
    """
    h = np.asarray(h, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    u, v, w = _project(h, xy)
    w2 = w * w
    jac = np.empty((xy.shape[0], 2, 2), dtype=np.float64)
    jac[:, 0, 0] = h[0, 0] / w - u * h[2, 0] / w2
    jac[:, 0, 1] = h[0, 1] / w - u * h[2, 1] / w2
    jac[:, 1, 0] = h[1, 0] / w - v * h[2, 0] / w2
    jac[:, 1, 1] = h[1, 1] / w - v * h[2, 1] / w2
    return jac


def transfer_scale(h: np.ndarray, xy: np.ndarray, scales: np.ndarray, eps: float = SCALE_EPS) -> np.ndarray:
    """Scale of each point after the homography: ``sqrt(s**2 + eps) * sqrt(|det J|)``.

    This is exactly the official computation (an isotropic circle of radius ``s``
    mapped by the local affine ``J``; the radius of the circle of equal area), which
    goes through the eigenvalues of ``(J s^2 J^T)^-1``; the closed form is identical.
    """
    jac = local_affine(h, xy)
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    s = np.asarray(scales, dtype=np.float64).reshape(-1)
    return np.sqrt(s * s + eps) * np.sqrt(np.abs(det))


def warp_points(points: np.ndarray, h: np.ndarray, eps: float = SCALE_EPS) -> np.ndarray:
    """Map points ``(N, C>=2)`` through ``h``; returns a new float64 ``(N, C)`` array.

    Columns 0-1 (x, y) are projected; column 2, if present, is a scale and is
    transferred with :func:`transfer_scale`; further columns (score, ...) are copied.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"points must be (N, C>=2), got shape {pts.shape}")
    out = pts.copy()
    if pts.shape[0] == 0:
        return out
    h = np.asarray(h, dtype=np.float64)
    u, v, w = _project(h, pts[:, :2])
    out[:, 0] = u / w
    out[:, 1] = v / w
    if pts.shape[1] > 2:
        out[:, 2] = transfer_scale(h, pts[:, :2], pts[:, 2], eps=eps)
    return out


def remove_border(image, border: int):
    """Copy of an array or tensor with a frame of ``border`` pixels of its last two
    dimensions set to zero (False)."""
    out = image.clone() if hasattr(image, "clone") else np.array(image, copy=True)
    if border <= 0:
        return out
    out[..., :border, :] = 0
    out[..., -border:, :] = 0
    out[..., :, :border] = 0
    out[..., :, -border:] = 0
    return out


def common_region_masks(h_dst_to_src: np.ndarray, shape_src: Tuple[int, ...], shape_dst: Tuple[int, ...],
                        border: int = 15, threshold: float = 0.75) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the region of each image that is visible in the other one.

    Official procedure: an all-ones image of the other view with a ``border`` frame
    removed is warped into this view with ``cv2.warpPerspective`` (bilinear, zero
    outside), kept where ``>= threshold``, and the ``border`` frame is removed again.
    ``h_dst_to_src`` maps destination pixels to source pixels; shapes are
    ``(rows, cols, ...)``. Returns ``(mask_src, mask_dst)``.
    """
    h_d2s = np.asarray(h_dst_to_src, dtype=np.float64)
    h_s2d = invert_homography(h_d2s)
    rs, cs = int(shape_src[0]), int(shape_src[1])
    rd, cd = int(shape_dst[0]), int(shape_dst[1])

    ones_dst = remove_border(np.ones((rd, cd), dtype=np.float64), border)
    mask_src = cv2.warpPerspective(ones_dst, h_d2s, (cs, rs)) >= threshold
    ones_src = remove_border(np.ones((rs, cs), dtype=np.float64), border)
    mask_dst = cv2.warpPerspective(ones_src, h_s2d, (cd, rd)) >= threshold
    return remove_border(mask_src, border), remove_border(mask_dst, border)


def rounded_pixel_index(xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest pixel ``(rows, cols)`` of points ``(N, 2)`` as int64, rounding halves to
    even like Python's ``round`` used by the official code (NaN maps to a huge value)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        r = np.rint(xy[:, 1])
        c = np.rint(xy[:, 0])
    big = np.iinfo(np.int64).max // 2
    r = np.where(np.isfinite(r), np.clip(r, -big, big), big).astype(np.int64)
    c = np.where(np.isfinite(c), np.clip(c, -big, big), big).astype(np.int64)
    return r, c


def points_in_mask(xy: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Which points ``(N, 2)`` (x, y) fall on a True pixel of ``mask`` (nearest pixel).

    Returns ``(inside, outside_image)``: boolean ``(N,)`` arrays; points whose rounded
    position lies outside the array are never inside and are flagged in
    ``outside_image`` (the official code raised IndexError or wrapped around there).
    """
    r, c = rounded_pixel_index(xy)
    rows, cols = mask.shape[:2]
    valid = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    inside = np.zeros(r.shape[0], dtype=bool)
    inside[valid] = np.asarray(mask, dtype=bool)[r[valid], c[valid]]
    return inside, ~valid


def transfer_orientation(h: np.ndarray, xy: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Orientation of each point after the homography, degrees in [0, 360).

    Orientations follow the project convention (degrees in image coordinates, x right, y
    down: OpenCV's ``KeyPoint.angle``): the direction ``(cos a, sin a)`` at ``xy`` is mapped by
    the local affine :func:`local_affine` of ``h``.
    """
    jac = local_affine(h, xy)
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64).reshape(-1))
    d = np.einsum("nij,nj->ni", jac, np.stack([np.cos(a), np.sin(a)], 1))
    return np.mod(np.rad2deg(np.arctan2(d[:, 1], d[:, 0])), 360.0)


def local_rotation(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Rotation (degrees, image coordinates) of the local affine of ``h`` at each point: the
    angle of the rotation nearest to the Jacobian ``J`` (``atan2(J10 - J01, J00 + J11)``)."""
    j = local_affine(h, xy)
    return np.rad2deg(np.arctan2(j[:, 1, 0] - j[:, 0, 1], j[:, 0, 0] + j[:, 1, 1]))


def angle_difference(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Absolute difference of two angles in degrees, in [0, 180]."""
    d = np.mod(np.asarray(a_deg, dtype=np.float64) - np.asarray(b_deg, dtype=np.float64), 360.0)
    return np.minimum(d, 360.0 - d)


def rotation_homography(shape: Tuple[int, int], angle_deg: float) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Rotation of an image of ``shape`` (h, w) about its centre by ``angle_deg``
    (counter-clockwise on screen, as ``cv2.getRotationMatrix2D``) onto a canvas expanded so
    that nothing is cropped.

    Returns ``(H, (h', w'))``: ``H`` maps pixel coordinates of the original to the rotated
    canvas (``cv2.warpPerspective(img, H, (w', h'))`` renders it). Multiples of 90 degrees
    use exact 0/1 entries, so they are pixel permutations.
    """
    h, w = int(shape[0]), int(shape[1])
    a = float(angle_deg) % 360.0
    if a % 90.0 == 0.0:
        c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][int(a // 90)]
    else:
        c, s = float(np.cos(np.deg2rad(a))), float(np.sin(np.deg2rad(a)))
    # counter-clockwise on screen with y pointing down: x' = c x + s y, y' = -s x + c y
    rot = np.array([[c, s], [-s, c]])
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    rc = (corners - centre) @ rot.T
    new_w = int(round(rc[:, 0].max() - rc[:, 0].min())) + 1
    new_h = int(round(rc[:, 1].max() - rc[:, 1].min())) + 1
    new_centre = np.array([(new_w - 1) / 2.0, (new_h - 1) / 2.0])
    out = np.eye(3)
    out[:2, :2] = rot
    out[:2, 2] = new_centre - rot @ centre
    return out, (new_h, new_w)
