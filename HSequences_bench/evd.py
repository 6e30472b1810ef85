"""The EVD benchmark (homography): its data layout, metric and reference estimator.

**EVD**: ``<root>/EVD/{1,2,h}/`` (view 1, view 2, homography ``h/<name>.txt`` mapping
view-1 pixels to view 2). Metric: the mean reprojection error over the part of image 1
visible in image 2, per pair; the curve is the share of pairs under each of
:data:`EVD_THRESHOLDS` (ten, log-spaced from 1 to 20 px); mAA its mean. H maps image 1 to
image 2. Follows the reference package ``wxbs-benchmark`` 0.0.4
(:mod:`HSequences_bench.wide_baseline`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .wide_baseline_common import IncompletePair, PathLike, _as_3x3, _read_matrix, _valid_model, sample_points

#: Reprojection-error thresholds of the reference ``get_mAA``/``evaluate_Hs``: ten from 1 to 20 px.
EVD_THRESHOLDS = np.logspace(np.log2(1.0), np.log2(20), 10, base=2.0)
#: The "registered" threshold for the count of EVD pairs.
EVD_REGISTERED_PX = 10.0
EVD_THRESHOLDS.setflags(write=False)


@dataclass(frozen=True)
class EVDPair:
    """One EVD pair: its name (the file stem) and files (``H`` maps image 1 to image 2)."""

    name: str
    img1: Path
    img2: Path
    homography: Path


def evd_data_dir(root: PathLike) -> Path:
    """``<root>/EVD`` (``root`` may also be that folder itself); ``FileNotFoundError`` if absent."""
    r = Path(root)
    if (r / "EVD").is_dir():
        return r / "EVD"
    if r.name == "EVD" and r.is_dir():
        return r
    raise FileNotFoundError(f"EVD data not found: {r / 'EVD'} (expected <root>/EVD/{{1,2,h}}/)")


def scan_evd_pairs(root: PathLike) -> Tuple[List[EVDPair], List[IncompletePair]]:
    """The EVD pairs: every file of ``EVD/1/`` (sorted, as the reference), with ``EVD/2/<same>``
    and ``EVD/h/<stem>.txt``; the name is the file name before its first dot (as the reference).
    Apart, the pairs whose ``2/`` image or ``h/`` file is missing (:class:`IncompletePair`
    naming the missing files). A missing ``1/``, ``2/`` or ``h/`` folder is a
    ``FileNotFoundError``, no image in ``1/`` a ``ValueError``."""
    d = evd_data_dir(root)
    for sub in ("1", "2", "h"):
        if not (d / sub).is_dir():
            raise FileNotFoundError(f"EVD folder missing: {d / sub}")
    pairs: List[EVDPair] = []
    incomplete: List[IncompletePair] = []
    files = sorted(p for p in (d / "1").iterdir() if p.is_file() and not p.name.startswith("."))
    for f in files:
        img2, h = d / "2" / f.name, d / "h" / (Path(f.name).stem + ".txt")
        name = f.name.split(".")[0]
        missing = tuple(str(need) for need in (img2, h) if not need.is_file())
        if missing:
            incomplete.append(IncompletePair("EVD", name, missing))
        else:
            pairs.append(EVDPair(name, f, img2, h))
    if not files:
        raise ValueError(f"no EVD images in {d / '1'}")
    return pairs, incomplete


def list_evd_pairs(root: PathLike) -> List[EVDPair]:
    """The EVD pairs of :func:`scan_evd_pairs`. A missing ``2/`` image or ``h/`` file is a
    ``FileNotFoundError`` naming the pair and the file."""
    pairs, incomplete = scan_evd_pairs(root)
    if incomplete:
        raise FileNotFoundError(incomplete[0].message)
    return pairs


def read_evd_homography(path: PathLike) -> np.ndarray:
    """The 3x3 ground-truth homography of ``h/<name>.txt`` (view 1 -> view 2), divided by ``H[2, 2]``
    as the reference does. Entries are space or tab separated."""
    p = Path(path)
    H = _read_matrix(p, 3, 3, "EVD homography")
    if H[2, 2] == 0:
        raise ValueError(f"{p}: EVD homography has H[2,2] = 0")
    return H / H[2, 2]


def evd_reprojection_error(img1_shape: Sequence[int], img2_shape: Sequence[int],
                           H_gt: np.ndarray, H: Optional[np.ndarray]) -> float:
    """Mean reprojection error (px) of ``H`` against ``H_gt`` over the visible part of image 1,
    exactly as the reference ``get_visible_part_mean_absolute_reprojection_error``:

    the all-ones mask of image 1 is warped (bilinear) into image 2 by ``H_gt`` and back by its
    inverse; pixels where that is ``> 0`` are visible. Each pixel centre is mapped by ``H_gt``
    and by ``H`` (float32, ``cv2.perspectiveTransform``) and the *Euclidean* distance between
    the two is averaged over the visible pixels (despite the name; the L1 line is commented out
    in the reference). Shapes are ``(height, width, ...)``; extra dimensions are ignored.

    ``H is None`` (estimation failed) is scored as the identity, as the reference README's
    estimators do (``if H is None: H = np.eye(3)``); the reference metric itself raises on None.
    Where the reference gives NaN (non-finite ``H``, no visible pixel) this returns ``inf``:
    both fail every threshold, so the mAA is unchanged.
    """
    H_gt = _as_3x3(H_gt, "H_gt")
    H = np.eye(3) if H is None else _as_3x3(H, "H")
    h, w = int(img1_shape[0]), int(img1_shape[1])
    h2, w2 = int(img2_shape[0]), int(img2_shape[1])
    mask1 = np.ones((h, w))
    mask1in2 = cv2.warpPerspective(mask1, H_gt, (w2, h2))
    visible = cv2.warpPerspective(mask1in2, np.linalg.inv(H_gt), (w, h)) > 0
    xg, yg = np.meshgrid(np.arange(w), np.arange(h))
    coords = np.stack([xg, yg], axis=-1).reshape(-1, 1, 2).astype(np.float32)
    xy_gt = cv2.perspectiveTransform(coords, H_gt.astype(np.float32)).squeeze(1)
    xy_est = cv2.perspectiveTransform(coords, H.astype(np.float32)).squeeze(1)
    error = np.sqrt(((xy_gt - xy_est) ** 2).sum(axis=1)).reshape(xg.shape) * visible
    n = visible.sum()  # np.int64: float32 sum / int64 -> float64, as the reference
    mean = float(error.sum() / n) if n else float("nan")
    return mean if math.isfinite(mean) else float("inf")


def evd_accuracy(errors: Sequence[float], thresholds: Sequence[float] = EVD_THRESHOLDS) -> np.ndarray:
    """Share of pairs with error ``<= th`` for each threshold (the reference ``get_mAA`` curve)."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("no EVD errors given")
    return np.array([(e <= th).mean() for th in np.asarray(thresholds, dtype=np.float64)])


def evd_maa(errors: Sequence[float], thresholds: Sequence[float] = EVD_THRESHOLDS) -> float:
    """mAA: the mean over the ten thresholds of :func:`evd_accuracy`."""
    return float(np.mean(evd_accuracy(errors, thresholds)))


def evd_pairs_under(errors: Sequence[float], px: float = EVD_REGISTERED_PX) -> int:
    """How many pairs have error ``<= px`` (10 px: the reference's ``<=`` convention)."""
    return int(np.sum(np.asarray(errors, dtype=np.float64) <= px))


def estimate_homography_magsac(pts1: np.ndarray, pts2: np.ndarray, threshold: float = 0.5,
                               confidence: float = 0.999, max_iters: int = 100_000) -> Optional[np.ndarray]:
    """H (image 1 -> 2) from matches by MAGSAC++ (``cv2.USAC_MAGSAC``), or None when there are
    fewer than 4 matches (none at all, of any shape, included) or OpenCV fails.

    Defaults are the reference README's EVD baselines: threshold 0.5 px, 100k iterations and
    the intended confidence 0.999. (The README passes them positionally,
    ``cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 0.5, 0.999, 100000)``, where the 5th slot
    is the output ``mask``, so there the 0.999 is dropped and OpenCV's default 0.995 applies;
    here they are passed by keyword.) The README then scores a failed H as the identity:
    :func:`evd_reprojection_error` does that for None.
    """
    pts = sample_points(pts1, pts2, 4)
    if pts is None:
        return None
    try:
        H, _ = cv2.findHomography(*pts, cv2.USAC_MAGSAC, ransacReprojThreshold=float(threshold),
                                  maxIters=int(max_iters), confidence=float(confidence))
    except cv2.error:
        return None
    H = _valid_model(H)
    if H is None or H[2, 2] == 0:
        return None
    return H / H[2, 2]
