"""Reading images the way the official code does, and the official input scaling."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]


class ImageReadError(RuntimeError):
    """An image could not be read or is unusable (missing, corrupt, constant, NaN)."""


def read_image_grey(path: PathLike) -> np.ndarray:
    """Read an image file as a 2-D grey array, keeping its bit depth.

    8-bit colour images are converted exactly as the official code does
    (``cv2.imread`` + ``COLOR_BGR2GRAY``, result uint8). 16-bit images stay uint16,
    float images stay float32, alpha channels are dropped. Raises
    :class:`ImageReadError` naming the file when it is missing or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"cannot decode image (corrupt or unsupported format): {p}")
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:
            raise ImageReadError(f"unsupported number of channels ({img.shape[2]}): {p}")
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        img = img.astype(np.float32)
    return img


def normalise_image(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey image -> float64 array divided by its maximum (the official input scaling).

    Raises :class:`ImageReadError` for non-2-D input, NaN/inf values, or an image whose
    maximum is not positive (all black), naming ``name`` in the message.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8:
        code = cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        img = cv2.cvtColor(img, code)
    if img.ndim != 2:
        raise ImageReadError(f"{name}: expected a 2-D grey image, got shape {img.shape}")
    img = img.astype(np.float64)
    if not np.isfinite(img).all():
        raise ImageReadError(f"{name}: image contains NaN or inf values")
    m = img.max() if img.size else 0.0
    if m <= 0:
        raise ImageReadError(f"{name}: image is empty or all black (max = {m}); cannot normalise")
    return img / m
