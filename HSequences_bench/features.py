"""Loading and checking feature files (``.kpt.npy`` keypoints, ``.dsc.npy`` descriptors).

Keypoint files hold ``(N, >=4)`` rows ``x, y, scale, score`` (``--order-coord xysr``,
the default) or ``y, x, scale, score`` (``yxsr``); extra columns (e.g. angle) are
ignored. Descriptor files hold ``(N, D)`` rows, one per keypoint row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from HSequences_bench.baselines import METHODS
from HSequences_bench.hsequences import DEFAULT_PREFIX
from keynet.base.files import feature_paths

PathLike = Union[str, os.PathLike]


class FeatureFileError(RuntimeError):
    """A feature file is missing or malformed; the message names it."""


def pair_feature_paths(results_dir: PathLike, detector: str, sequence: str, k: int,
                       prefix: str = DEFAULT_PREFIX) -> Tuple[Path, Path]:
    """``(kpt, dsc)`` paths of image ``k`` of ``sequence`` in the official layout
    ``<results>/<detector>/<prefix>/<sequence>/<k>.ppm.{kpt,dsc}.npy``."""
    line = f"{prefix.strip('/')}/{sequence}/{k}.ppm" if prefix.strip("/") else f"{sequence}/{k}.ppm"
    return feature_paths(results_dir, detector, line)


def extraction_hint(detector: str, results_dir: PathLike, data_dir: Optional[PathLike] = None) -> str:
    """The command that would create a detector's feature files."""
    dd = f" --data-dir {data_dir}" if data_dir else ""
    if detector.lower() in METHODS:
        return (f"keynet baselines --method {detector.lower()} --results-dir {results_dir}{dd}")
    return (f"python extract_multiscale_features.py --list-images HSequences_bench/HPatches_images.txt "
            f"--results-dir {results_dir} --network-version {detector}")


@dataclass
class Keypoints:
    """Keypoints of one image, in file order: ``xysr`` ``(N, 4)`` (x, y, scale, score) in
    the file's float dtype, plus the number of exactly duplicated rows."""
    points: np.ndarray
    path: Path
    duplicates: int


def load_keypoints(path: PathLike, order_coord: str = "xysr", hint: str = "") -> Keypoints:
    """Load and check a keypoint file; returns ``x, y, scale, score`` columns.

    Zero detections (an empty array) give ``(0, 4)``. Raises :class:`FeatureFileError`
    naming the file when it is missing (with ``hint``, the command that creates it),
    not a 2-D array with at least 4 columns, or holds NaN/inf.
    """
    p = Path(path)
    if not p.is_file():
        raise FeatureFileError(f"missing keypoint file: {p}" + (f"\n  create it with: {hint}" if hint else ""))
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise FeatureFileError(f"cannot read keypoint file {p}: {exc}") from None
    if arr.size == 0:
        return Keypoints(np.zeros((0, 4), dtype=np.float64), p, 0)
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise FeatureFileError(f"keypoint file {p} must be (N, >=4) [x, y, scale, score], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise FeatureFileError(f"keypoint file {p} is not numeric (dtype {arr.dtype})")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr[:, :4]).all(axis=1)
    if bad.any():
        raise FeatureFileError(f"keypoint file {p} has NaN/inf in {int(bad.sum())} rows (first row {int(np.argmax(bad))})")
    if order_coord == "xysr":
        pts = arr[:, :4].copy()
    elif order_coord == "yxsr":
        pts = arr[:, [1, 0, 2, 3]].copy()
    else:
        raise ValueError(f"order_coord must be 'xysr' or 'yxsr', got {order_coord!r}")
    dup = int(pts.shape[0] - np.unique(pts[:, :3], axis=0).shape[0])
    return Keypoints(pts, p, dup)


def load_descriptors(path: PathLike, num_rows: int) -> np.ndarray:
    """Load and check a descriptor file with ``num_rows`` rows (2-D, finite).

    Zero keypoints accept an empty file. Raises :class:`FeatureFileError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FeatureFileError(f"missing descriptor file: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise FeatureFileError(f"cannot read descriptor file {p}: {exc}") from None
    if num_rows == 0 and arr.size == 0:
        return np.zeros((0, arr.shape[-1] if arr.ndim == 2 else 1), dtype=np.float32)
    if arr.ndim != 2:
        raise FeatureFileError(f"descriptor file {p} must be 2-D (N, D), got shape {arr.shape}")
    if arr.shape[0] != num_rows:
        raise FeatureFileError(f"descriptor file {p} has {arr.shape[0]} rows but its keypoint file has {num_rows}")
    if not np.issubdtype(arr.dtype, np.number):
        raise FeatureFileError(f"descriptor file {p} is not numeric (dtype {arr.dtype})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr).all(axis=1)
        raise FeatureFileError(f"descriptor file {p} has NaN/inf in {int(bad.sum())} rows (first row {int(np.argmax(bad))})")
    return arr
