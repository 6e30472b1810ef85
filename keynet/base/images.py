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


#: Channel orders a colour array may come in (``cv2.imread`` gives ``bgr``; PIL, imageio,
#: matplotlib and torchvision give ``rgb``).
CHANNEL_ORDERS = ("rgb", "bgr")
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def check_jpeg_complete(path: PathLike) -> None:
    """Raise :class:`ImageReadError` for a JPEG file without its end-of-image marker
    (a truncated download or copy). OpenCV decodes such a file anyway, grey below the cut,
    with only an unattributed libjpeg warning on stderr."""
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(2)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read()
    head_ok = size >= 4 and head == b"\xff\xd8"
    if head_ok and b"\xff\xd9" not in tail.rstrip(b"\x00\r\n \t"):
        raise ImageReadError(f"truncated JPEG (no end-of-image marker; the file is cut short): {p}")


def read_image_grey(path: PathLike) -> np.ndarray:
    """Read an image file as a 2-D grey array, keeping its bit depth.

    8-bit colour images are converted exactly as the official code does
    (``cv2.imread`` + ``COLOR_BGR2GRAY``, result uint8). 16-bit images stay uint16,
    float images stay float32, alpha channels are dropped. Raises
    :class:`ImageReadError` naming the file when it is missing or unreadable.
    """
    p = Path(path)
    if p.is_dir():
        raise ImageReadError(f"{p} is a folder, not an image file")
    if not p.is_file():
        raise ImageReadError(f"image not found: {p}")
    if p.suffix.lower() in _JPEG_SUFFIXES:
        check_jpeg_complete(p)
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


def normalise_image(img: np.ndarray, name: str = "image", channel_order: str = "rgb") -> np.ndarray:
    """Grey image -> float64 array divided by its maximum (the official input scaling).

    A colour uint8 array ``(H, W, 3|4)`` is converted to grey first, its channels read in
    ``channel_order``: ``rgb`` (the default: PIL, imageio, matplotlib) or ``bgr`` (an
    array from ``cv2.imread``, as the official code reads files). Raises
    :class:`ImageReadError` for non-2-D input, NaN/inf values, or an image whose maximum is
    not positive (all black), naming ``name`` in the message.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8:
        rgb = channel_order == "rgb"
        code = ((cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY) if img.shape[2] == 3
                else (cv2.COLOR_RGBA2GRAY if rgb else cv2.COLOR_BGRA2GRAY))
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
