"""Pictures of features: keypoints drawn with their scale, and two images side by side
with their matches (inliers green, outliers red). OpenCV drawing, BGR uint8 images.

Coordinates use the project's convention (centre of the top-left pixel at (0, 0)); lines
and circles are drawn with 4 bits of sub-pixel precision.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]
Colour = Tuple[int, int, int]

GREEN: Colour = (0, 200, 0)
RED: Colour = (0, 0, 230)
YELLOW: Colour = (0, 220, 255)
_SHIFT = 4  # sub-pixel bits of cv2 drawing
_ONE = 1 << _SHIFT


def to_bgr(image: Union[np.ndarray, PathLike]) -> np.ndarray:
    """A path, or a grey / BGR / BGRA array of any depth -> BGR uint8 (a copy). Float
    images are scaled by their maximum, 16-bit ones by 1/257."""
    if isinstance(image, (str, os.PathLike)):
        img = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image: {image}")
        return img
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        m = np.nanmax(f) if f.size else 0.0
        f = f / m if m > 1.0 else f
        img = (np.clip(np.nan_to_num(f), 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    raise ValueError(f"expected a grey or colour image, got shape {img.shape}")


def _fixed(v: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(v, np.float64) * _ONE).astype(np.int64)


def draw_keypoints(image: Union[np.ndarray, PathLike], kpts: np.ndarray, color: Colour = YELLOW,
                   radius_per_scale: float = 1.0, min_radius: float = 1.5, max_points: Optional[int] = None,
                   thickness: int = 1, centres: bool = True) -> np.ndarray:
    """Keypoints ``kpts`` (N, >=2) x, y [, scale] drawn on a copy of ``image``: a circle
    of radius ``scale * radius_per_scale`` (at least ``min_radius``; ``min_radius`` alone
    without a scale column) and, with ``centres``, a dot at the point. ``max_points``
    draws only the first ones (best first for Key.Net output)."""
    out = to_bgr(image)
    k = np.asarray(kpts, np.float64)
    k = k.reshape(0, 2) if k.size == 0 else k.reshape(len(k), -1)
    if k.shape[1] < 2:
        raise ValueError(f"keypoints must be (N, >=2), got shape {np.shape(kpts)}")
    if max_points is not None:
        k = k[:max_points]
    radii = np.maximum(k[:, 2] * radius_per_scale if k.shape[1] >= 3 else np.zeros(len(k)), min_radius)
    xy, rr = _fixed(k[:, :2]), _fixed(radii)
    for (x, y), r in zip(xy, rr):
        cv2.circle(out, (int(x), int(y)), int(r), color, thickness, cv2.LINE_AA, _SHIFT)
        if centres:
            cv2.circle(out, (int(x), int(y)), _ONE, color, -1, cv2.LINE_AA, _SHIFT)
    return out


def side_by_side(img0: np.ndarray, img1: np.ndarray, gap: int = 8) -> Tuple[np.ndarray, int]:
    """Two BGR images next to each other (top-aligned, white gap): ``(canvas, x offset of
    the second image)``."""
    h = max(img0.shape[0], img1.shape[0])
    w = img0.shape[1] + gap + img1.shape[1]
    canvas = np.full((h, w, 3), 255, np.uint8)
    canvas[: img0.shape[0], : img0.shape[1]] = img0
    off = img0.shape[1] + gap
    canvas[: img1.shape[0], off:] = img1
    return canvas, off


def draw_matches(img0: Union[np.ndarray, PathLike], img1: Union[np.ndarray, PathLike], xy0: np.ndarray,
                 xy1: np.ndarray, matches: Optional[np.ndarray] = None, inliers: Optional[np.ndarray] = None,
                 max_lines: Optional[int] = None, gap: int = 8, thickness: int = 1, text: Optional[str] = None,
                 kpts_color: Optional[Colour] = None) -> np.ndarray:
    """Two images side by side with a line per match: green for inliers, red for outliers
    (all green without ``inliers``).

    ``xy0``/``xy1``: keypoints (N0, >=2) and (N1, >=2); ``matches``: (K, 2) index pairs
    (``None``: ``xy0[k]`` matches ``xy1[k]``); ``inliers``: (K,) bool. ``max_lines`` draws
    an evenly spread subset (outliers drawn first, inliers on top). ``text`` is written on
    a white banner added above the pictures; with ``kpts_color`` every keypoint is dotted too.
    """
    a, b = to_bgr(img0), to_bgr(img1)
    canvas, off = side_by_side(a, b, gap)
    p0 = np.asarray(xy0, np.float64).reshape(len(xy0), -1)[:, :2]
    p1 = np.asarray(xy1, np.float64).reshape(len(xy1), -1)[:, :2]
    m = np.column_stack([np.arange(len(p0)), np.arange(len(p0))]) if matches is None else \
        np.asarray(matches, np.int64).reshape(-1, 2)
    if matches is None and len(p0) != len(p1):
        raise ValueError("without matches, xy0 and xy1 must have the same length")
    inl = np.ones(len(m), bool) if inliers is None else np.asarray(inliers, bool).reshape(-1)
    if len(inl) != len(m):
        raise ValueError(f"inliers has {len(inl)} entries for {len(m)} matches")
    if kpts_color is not None:
        for p, dx in ((p0, 0), (p1, off)):
            for x, y in _fixed(p + [dx, 0]):
                cv2.circle(canvas, (int(x), int(y)), _ONE, kpts_color, -1, cv2.LINE_AA, _SHIFT)
    order = np.r_[np.flatnonzero(~inl), np.flatnonzero(inl)]
    if max_lines is not None and len(order) > max_lines:
        order = order[np.sort(np.linspace(0, len(order) - 1, max_lines).round().astype(int))]
    for k in order:
        c = GREEN if inl[k] else RED
        x0, y0 = _fixed(p0[m[k, 0]])
        x1, y1 = _fixed(p1[m[k, 1]] + [off, 0])
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), c, thickness, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, (int(x0), int(y0)), 2 * _ONE, c, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, (int(x1), int(y1)), 2 * _ONE, c, -1, cv2.LINE_AA, _SHIFT)
    if text:  # on a white banner above the pictures
        scale = max(0.5, canvas.shape[1] / 2000.0)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(2 * scale)))
        banner = np.full((th + base + 12, canvas.shape[1], 3), 255, np.uint8)
        cv2.putText(banner, text, (8, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, int(2 * scale)),
                    cv2.LINE_AA)
        canvas = np.vstack([banner, canvas])
    return canvas


def fit_width(image: np.ndarray, max_width: Optional[int]) -> np.ndarray:
    """Downscale (area averaging) so the width is at most ``max_width`` (None: unchanged)."""
    if not max_width or image.shape[1] <= max_width:
        return image
    f = max_width / float(image.shape[1])
    return cv2.resize(image, (max_width, max(1, int(round(image.shape[0] * f)))), interpolation=cv2.INTER_AREA)


def save_image(path: PathLike, image: np.ndarray) -> Path:
    """Write an image (format from the extension), creating the folder; ``OSError`` naming
    the path when OpenCV cannot write it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(p), image)
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"cannot write image: {p} (unknown extension or unwritable folder)")
    return p


__all__ = ["GREEN", "RED", "YELLOW", "draw_keypoints", "draw_matches", "fit_width", "save_image", "side_by_side",
           "to_bgr"]
