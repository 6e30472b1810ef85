"""A stronger photometric simulation for the synthetic patch pairs: night, colour casts,
local illumination, shadows, blur and compression.

The Key.Net generator's jitter (:func:`keynet.base.augment.photometric_jitter`) changes
brightness, contrast, saturation and hue globally; real wide-baseline pairs differ by much
more: night against day (dark, low-contrast, noisy, non-linear tone curve), the colour of
the light, light that varies across the image, cast shadows, defocus or motion blur and
JPEG artefacts. :func:`simulate_appearance` applies each of these to a uint8 BGR photo with
its own probability and range (:class:`AppearanceConfig`, every value recorded in the
patch-pair manifest):

* ``night``: intensity ``v -> gain * v ** gamma`` on ``v`` in [0, 1], gamma ~ U(1.5, 3),
  gain ~ U(0.15, 0.5), then signal-dependent (shot) noise ``sqrt(v) * s`` plus read noise
  of ``s / 3``, s ~ U(2, 8) grey levels;
* ``cast``: per-channel gains ~ U(0.6, 1.4) (the colour of the light);
* ``local``: a smooth multiplicative field, a random 4x4 grid of gains ~ U(0.5, 1.5)
  upsampled bicubically over the image (light falling off across the scene);
* ``shadow``: a random polygon (3-6 corners around a point of the image) darkened by a factor ~ U(0.3, 0.7),
  its edge softened by a Gaussian of 1-2% of the image size;
* ``blur``: Gaussian, sigma ~ U(0.5, 2) px, or linear motion blur of 3-9 px (half each);
* ``jpeg``: re-encoding at quality ~ U(20, 90) (OpenCV).

The output stays uint8 BGR (values in [0, 255]); the geometry is never changed, so the
pair's ground truth is untouched.

One more effect, off in ``strong`` (``p_thermal`` 0, which draws nothing, so ``strong``'s
pairs are unchanged) and on in the ``thermal`` preset (:data:`THERMAL`):

* ``thermal``: a grey image whose local contrast polarity varies across it: ``v -> m + c(x)
  (v - m)`` with ``m`` the grey level's mean and ``c`` a smooth field, a random 4x4 grid of
  U(-1, 1) upsampled bicubically (clipped to [-1, 1]): the pattern is kept where ``c`` > 0,
  inverted where ``c`` < 0 and washed out near 0. Measured on the real visible / thermal pairs
  (``benchmarks/cross_sensor_polarity.py``, docs/hardnet.md): of their textured 32 px windows,
  38% are inverted (normalised cross-correlation < -0.3), 24% keep their polarity (> +0.3) and
  the rest are unrelated, with both kinds inside one image; colour / near-infrared pairs and
  day / night webcam frames have 3% and 1% inverted windows. A global inversion would model
  neither the mix nor the washed-out parts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

EFFECTS = ("night", "cast", "local", "shadow", "blur", "jpeg", "thermal")


@dataclass
class AppearanceConfig:
    """Probabilities of each effect of :func:`simulate_appearance` (0 turns one off)."""

    p_night: float = field(default=0.3, metadata={"help": "probability of the night tone curve and noise"})
    p_cast: float = field(default=0.4, metadata={"help": "probability of a colour cast"})
    p_local: float = field(default=0.4, metadata={"help": "probability of a smooth local illumination field"})
    p_shadow: float = field(default=0.3, metadata={"help": "probability of a cast shadow"})
    p_blur: float = field(default=0.3, metadata={"help": "probability of Gaussian or motion blur"})
    p_jpeg: float = field(default=0.3, metadata={"help": "probability of JPEG re-encoding"})
    p_thermal: float = field(default=0.0, metadata={"help": "probability of the thermal-like polarity field"})

    def __post_init__(self) -> None:
        for name in EFFECTS:
            p = getattr(self, f"p_{name}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{name} must be in [0, 1], got {p}")


def night(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, non-linear tone curve with shot and read noise (float BGR in [0, 255])."""
    v = img / 255.0
    gamma, gain, s = rng.uniform(1.5, 3.0), rng.uniform(0.15, 0.5), rng.uniform(2.0, 8.0)
    out = gain * np.power(v, gamma) * 255.0
    noise = rng.standard_normal(img.shape) * (np.sqrt(np.maximum(out, 0.0)) * s / np.sqrt(255.0) + s / 3.0)
    return out + noise


def colour_cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img * rng.uniform(0.6, 1.4, 3)[None, None, :]


def local_illumination(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    grid = rng.uniform(0.5, 1.5, (4, 4)).astype(np.float32)
    field_ = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return img * np.clip(field_, 0.3, 1.8)[..., None]


def shadow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    n = int(rng.integers(3, 7))
    centre = rng.uniform((0, 0), (w, h))
    radius = rng.uniform(0.15, 0.5) * max(h, w)
    # corners around the centre at jittered, evenly spread angles: a convex shadow over the centre
    ang = 2 * np.pi * np.arange(n) / n + rng.uniform(-0.8, 0.8, n) * np.pi / n + rng.uniform(0, 2 * np.pi)
    pts = centre + radius * np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.5, 1.0, (n, 1))
    mask = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, rng.uniform(0.01, 0.02) * max(h, w)))
    factor = rng.uniform(0.3, 0.7)
    return img * (1.0 - (1.0 - factor) * mask)[..., None]


def blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.integers(2):
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))
    k = int(rng.integers(3, 10))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D(((k - 1) / 2.0, (k - 1) / 2.0), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    kernel /= max(kernel.sum(), 1e-6)
    return cv2.filter2D(img, -1, kernel)


def jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q = int(rng.integers(20, 91))
    ok, buf = cv2.imencode(".jpg", np.clip(np.round(img), 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) if ok else img


def thermal(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey, with a smooth field of contrast polarity in [-1, 1] (the module doc)."""
    h, w = img.shape[:2]
    grey = cv2.cvtColor(np.clip(img, 0, 255).astype(np.float32), cv2.COLOR_BGR2GRAY)
    grid = rng.uniform(-1.0, 1.0, (4, 4)).astype(np.float32)
    c = np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), -1.0, 1.0)
    m = float(grey.mean())
    out = m + c * (grey - m)
    return np.repeat(out[..., None], 3, axis=2)


_ORDER = (("cast", colour_cast), ("local", local_illumination), ("shadow", shadow), ("night", night),
          ("blur", blur), ("jpeg", jpeg))
#: The ``thermal`` preset: ``strong``'s effects, then the thermal-like polarity field on a quarter
#: of the views (a prior, not a measured rate: the measurement shows the change exists, and how
#: often a training view should carry it is for the real-pair validation to decide).
THERMAL = AppearanceConfig(p_thermal=0.25)
#: The simulations of the patch-pair generator's presets beyond the Key.Net generator's jitter.
PRESETS = {"strong": AppearanceConfig(), "thermal": THERMAL}
#: The photometric presets of the patch-pair generator (``--appearance``): the Key.Net
#: generator's jitter alone, then :data:`PRESETS`.
APPEARANCES = ("jitter", *PRESETS)


def simulate_appearance(bgr: np.ndarray, rng: np.random.Generator, cfg: AppearanceConfig) -> np.ndarray:
    """The photo ``bgr`` (uint8, H x W x 3) under a randomly changed appearance (uint8).

    The effects run in the order of light to camera: colour of the light, local light,
    shadow, the night tone curve and sensor noise, blur, compression; then the thermal-like
    polarity field where ``p_thermal`` > 0."""
    img = bgr.astype(np.float32)
    for name, fn in _ORDER:
        if rng.random() < getattr(cfg, f"p_{name}"):
            img = np.clip(fn(img, rng), 0.0, 255.0).astype(np.float32)
    # after the others (a thermal camera sees the scene's heat, then its own noise and blur are
    # the grey image's); drawn only when on, so the presets without it are unchanged
    if cfg.p_thermal > 0 and rng.random() < cfg.p_thermal:
        img = np.clip(thermal(img, rng), 0.0, 255.0).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
