"""Random geometric and photometric changes of photos (the official Key.Net generator's),
shared by the Key.Net pair generator and the HardNet patch-pair generator."""
from __future__ import annotations

import cv2
import numpy as np

_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def random_homography(rng: np.random.Generator, max_angle: float = 45.0, max_scale: float = 2.0,
                      max_shearing: float = 0.8, min_scale: float = 0.5) -> np.ndarray:
    """``shear @ scale @ rotation`` (about the image origin), as the official generator."""
    scale = rng.uniform(min_scale, max_scale)
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    shear = rng.uniform(-max_shearing, max_shearing)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    sc = np.diag([scale, scale, 1.0])
    sh = np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return sh @ sc @ rot


def photometric_jitter(bgr: np.ndarray, rng: np.random.Generator, lower: float = 0.5,
                       upper: float = 1.5, hue_delta: float = 18.0,
                       brightness_delta: float = 36.0) -> np.ndarray:
    """Colour distortion of the official generator (SSD style), returns uint8 BGR.

    Brightness shift, contrast (applied before and again after the HSV step, as the
    official code does), saturation, hue and a channel permutation, each with p = 0.5.
    """
    img = bgr.astype(np.float64)
    if rng.integers(2):
        img = np.clip(img + rng.uniform(-brightness_delta, brightness_delta), 0.0, 255.0)
    contrast = bool(rng.integers(2))
    if contrast:
        img = np.clip(img * rng.uniform(lower, upper), 0.0, 255.0)
    hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float64)
    if rng.integers(2):
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(lower, upper), 0.0, 255.0)
    if rng.integers(2):
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + rng.uniform(-hue_delta, hue_delta), 180.0)
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float64)
    if contrast:
        img = np.clip(img * rng.uniform(lower, upper), 0.0, 255.0)
    if rng.integers(2):
        img = img[:, :, list(_PERMS[rng.integers(len(_PERMS))])]
    return img.astype(np.uint8)
