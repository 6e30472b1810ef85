"""Loading and checking feature files (``.kpt.npy`` keypoints, ``.dsc.npy`` descriptors).

Keypoint files hold ``(N, >=4)`` rows ``x, y, scale, score`` (``--order-coord xysr``,
the default) or ``y, x, scale, score`` (``yxsr``); extra columns (e.g. angle) are
ignored. Descriptor files hold ``(N, D)`` rows, one per keypoint row.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from HSequences_bench.baselines import METHODS
from HSequences_bench.hsequences import DEFAULT_PREFIX, image_list_lines
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


#: ``--features-prefix auto``: read the layout that holds the features (see :func:`feature_layout`).
AUTO_PREFIX = "auto"


def sequence_feature_lines(sequences: Sequence[str], prefix: str = DEFAULT_PREFIX,
                           data_dir: Optional[PathLike] = None) -> List[str]:
    """The feature names (image-list lines) of the images of ``sequences`` in the layout of
    ``prefix``: ``<prefix>/<sequence>/<k>.ppm``, or ``<sequence>/<k>.ppm`` for ``prefix=''``;
    k = 1..6, or with ``data_dir`` the images evaluated there
    (:func:`~HSequences_bench.hsequences.sequence_indices`)."""
    return image_list_lines(sequences, prefix, data_dir)


def missing_keypoint_files(results_dir: PathLike, detector: str, sequences: Sequence[str],
                           prefix: str = DEFAULT_PREFIX, data_dir: Optional[PathLike] = None) -> List[Path]:
    """The keypoint files of the images of ``sequences`` (:func:`sequence_feature_lines`)
    that are not in the layout of ``prefix``."""
    return [p for p in (feature_paths(results_dir, detector, line)[0]
                        for line in sequence_feature_lines(sequences, prefix, data_dir)) if not p.is_file()]


def feature_layout(results_dir: PathLike, detector: str, sequences: Sequence[str], prefix: str = AUTO_PREFIX,
                   data_dir: Optional[PathLike] = None) -> str:
    """The ``prefix`` of the feature layout to read: ``prefix`` itself unless it is ``'auto'``.

    ``auto`` picks between the official layout ``<results>/<detector>/hpatches-sequences-release/
    <sequence>/<k>.ppm.kpt.npy`` (the official image list's lines) and the folder layout
    ``<results>/<detector>/<sequence>/<k>.ppm.kpt.npy`` (what ``keynet extract --image-dir
    <data-dir>`` writes): the one holding more of the keypoint files of ``sequences``, the
    official one on a tie; the folder layout when neither holds any (where the extraction
    command of :func:`extraction_hint` puts them). ``data_dir``: count the images evaluated
    there (default: 1..6 of each sequence)."""
    if prefix != AUTO_PREFIX:
        return prefix
    total = len(sequence_feature_lines(sequences, "", data_dir))
    official = total - len(missing_keypoint_files(results_dir, detector, sequences, DEFAULT_PREFIX, data_dir))
    folder = total - len(missing_keypoint_files(results_dir, detector, sequences, "", data_dir))
    return DEFAULT_PREFIX if official and official >= folder else ""


def _cmd(*words: object) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def extraction_hint(detector: str, results_dir: PathLike, data_dir: Optional[PathLike] = None,
                    prefix: str = "") -> str:
    """The exact command that creates a detector's feature files for the sequences of
    ``data_dir`` in the layout of ``prefix`` (``''``: ``<results>/<detector>/<sequence>/...``,
    the layout of ``keynet extract --image-dir``). A baseline's name (``sift``, ``orb``, ...)
    gets the ``keynet baselines`` command, any other name ``keynet extract`` (Key.Net + HardNet
    with its defaults); the output folder is named by ``detector``, so ``keynet bench`` finds
    the files with the same ``--results-dir`` / ``--detector-name``."""
    data = data_dir if data_dir is not None else "hpatches-sequences-release"
    pre = prefix.strip("/")
    if detector in METHODS:
        if pre not in ("", DEFAULT_PREFIX):
            return f"keynet bench ... --extract (a baseline's features with --features-prefix {pre})"
        lst = Path(results_dir) / f"{detector}_images.txt"
        return (_cmd("python", "-m", "HSequences_bench.hsequences", "image-list", "--split", "all", "--data-dir",
                     data, "--prefix", pre, "--out", lst) + " && "
                + _cmd("keynet", "baselines", "--method", detector, "--list-images", lst, "--data-dir", data,
                       "--results-dir", results_dir))
    version = f"{detector}/{pre}" if pre else detector
    return _cmd("keynet", "extract", "--image-dir", data, "--results-dir", results_dir, "--network-version", version)


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
        raise FeatureFileError(f"missing keypoint file: {p}" + (f"; create it with: {hint}" if hint else ""))
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
