"""The WxBS benchmark (fundamental matrix): its data layout, metric and reference estimator.

**WxBS v1.1**: ``<root>/v1.1/<group>/<pair>/{01,02}.(png|jpg)`` and ``corrs.txt`` (hand
labelled correspondences, one ``x1 y1 x2 y2`` per line; ``crossval_errors.txt`` beside).
The pairs :data:`WXBS_VALIDATION_PAIRS` are the validation subset, the rest the test one.
Metric: the share of ground-truth correspondences whose symmetric epipolar distance to
the estimated F is within 0..19 px (:data:`WXBS_THRESHOLDS`); mAA = the mean of that curve.
F satisfies ``x2^T F x1 = 0`` (image 1 -> 2, as ``cv2.findFundamentalMat``). Follows the
reference package ``wxbs-benchmark`` 0.0.4 (:mod:`HSequences_bench.wide_baseline`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .wide_baseline_common import (IncompletePair, PathLike, _as_3x3, _as_points, _short, _valid_model, data_lines,
                                   sample_points)

WXBS_VERSION = "v1.1"
#: Pair folders the reference ``WxBSDataset(subset='val')`` keeps apart from the test pairs.
WXBS_VALIDATION_PAIRS: Tuple[str, ...] = ("kyiv_dolltheater2", "petrzin")
#: Epipolar-distance thresholds of the reference ``evaluate_Fs``: 0, 1, ..., 19 px.
WXBS_THRESHOLDS = np.arange(20)
WXBS_THRESHOLDS.setflags(write=False)

_WXBS_IMAGE_EXTENSIONS = (".png", ".jpg")  # the reference tries 01.png, then 01.jpg
SUBSETS = ("val", "test")


@dataclass(frozen=True)
class WxBSPair:
    """One WxBS pair: its group (``WGABS``...), pair folder name, files and subset."""

    group: str
    name: str
    img1: Path
    img2: Path
    corrs: Path
    subset: str  # 'val' | 'test'
    crossval_errors: Optional[Path] = None

    @property
    def pair_id(self) -> str:
        """``<group>/<pair>``: the key of the reference's per-pair results."""
        return f"{self.group}/{self.name}"


def wxbs_data_dir(root: PathLike, version: str = WXBS_VERSION) -> Path:
    """``<root>/<version>`` (``root`` may also be that folder itself); ``FileNotFoundError`` if absent."""
    r = Path(root)
    if (r / version).is_dir():
        return r / version
    if r.name == version and r.is_dir():
        return r
    raise FileNotFoundError(f"WxBS data not found: {r / version} (expected <root>/{version}/<group>/<pair>/)")


def _find_image(folder: Path, stem: str) -> Optional[Path]:
    for ext in _WXBS_IMAGE_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def scan_wxbs_pairs(root: PathLike, subset: str = "all", version: str = WXBS_VERSION
                    ) -> Tuple[List[WxBSPair], List[IncompletePair]]:
    """The WxBS pairs under ``<root>/<version>`` of ``subset``, in the reference's order (groups,
    then pairs, sorted), and apart those of the subset whose folder lacks an image
    (``01``/``02`` ``.png`` or ``.jpg``) or ``corrs.txt`` (:class:`IncompletePair`, naming what
    is missing). ``subset``: ``'val'`` (:data:`WXBS_VALIDATION_PAIRS`), ``'test'`` (the others)
    or ``'all'``; each pair carries its subset. No pair folder at all is a ``ValueError``."""
    if subset not in SUBSETS + ("all",):
        raise ValueError(f"subset must be 'val', 'test' or 'all', got {subset!r}")
    data_dir = wxbs_data_dir(root, version)
    pairs: List[WxBSPair] = []
    incomplete: List[IncompletePair] = []
    n_found = 0
    for group in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for d in sorted(p for p in group.iterdir() if p.is_dir() and not p.name.startswith(".")):
            n_found += 1
            pair_subset = "val" if d.name in WXBS_VALIDATION_PAIRS else "test"
            if subset not in ("all", pair_subset):
                continue
            img1, img2 = _find_image(d, "01"), _find_image(d, "02")
            corrs = d / "corrs.txt"
            missing = tuple([f"{stem}.png (or {stem}.jpg)" for stem, img in (("01", img1), ("02", img2))
                             if img is None] + ([] if corrs.is_file() else ["corrs.txt"]))
            if missing:
                incomplete.append(IncompletePair("WxBS", f"{group.name}/{d.name}", missing, d))
                continue
            errs = d / "crossval_errors.txt"
            pairs.append(WxBSPair(group.name, d.name, img1, img2, corrs, pair_subset,  # type: ignore[arg-type]
                                  errs if errs.is_file() else None))
    if n_found == 0:
        raise ValueError(f"no WxBS pair folders (<group>/<pair>/) under {data_dir}")
    return pairs, incomplete


def list_wxbs_pairs(root: PathLike, subset: str = "all", version: str = WXBS_VERSION) -> List[WxBSPair]:
    """The WxBS pairs under ``<root>/<version>``, in the reference's order (groups, then pairs, sorted).

    ``subset``: ``'val'`` (:data:`WXBS_VALIDATION_PAIRS`), ``'test'`` (the others) or ``'all'``;
    each pair carries its subset. Unlike the reference, which silently skips a folder without
    ``01.png``/``01.jpg``, a pair folder of the subset missing an image or ``corrs.txt`` is an
    error (``FileNotFoundError`` naming the pair, what it lacks and its folder;
    :func:`scan_wxbs_pairs` lists such pairs apart instead); no pair folder at all is a
    ``ValueError``.
    """
    pairs, incomplete = scan_wxbs_pairs(root, subset, version)
    if incomplete:
        raise FileNotFoundError(incomplete[0].message)
    return pairs


def read_wxbs_corrs(path: PathLike) -> np.ndarray:
    """The ground-truth correspondences of ``corrs.txt``: ``(N, 4)`` float64 ``x1 y1 x2 y2``.

    Blank lines and ``#`` comments are skipped (as ``np.loadtxt``, which the reference uses);
    a line that is not four finite numbers is a ``ValueError`` naming ``file:line``.
    """
    p = Path(path)
    rows: List[List[float]] = []
    for lineno, line in data_lines(p, "WxBS correspondences"):
        try:
            row = [float(x) for x in line.split()]
        except ValueError:
            row = []
        if len(row) != 4 or not all(math.isfinite(v) for v in row):
            raise ValueError(f"{p}:{lineno}: expected four numbers 'x1 y1 x2 y2', got {_short(line)}")
        rows.append(row)
    if not rows:
        raise ValueError(f"WxBS correspondences file is empty: {p}")
    return np.array(rows, dtype=np.float64)


def _as_corrs(corrs: np.ndarray) -> np.ndarray:
    c = np.asarray(corrs, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 4 or len(c) == 0:
        raise ValueError(f"ground-truth correspondences must be (N>0, 4) x1 y1 x2 y2, got shape {c.shape}")
    return c



def symmetric_epipolar_distance(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """Per correspondence, ``sqrt(d(x2, F x1)^2 + d(x1, F^T x2)^2)``: the root of the *sum* of the
    two squared point-to-epiline distances (kornia's ``symmetrical_epipolar_distance(...,
    squared=False)``, which the reference calls). An epiline with ``a = b = 0`` gives ``inf``
    (kornia >= 0.8; older kornia gave NaN there and added ``eps = 1e-8`` under the root, which
    only shifts distances by ~1e-8 px except for an exactly zero residual)."""
    F = _as_3x3(F, "F")
    p1, p2 = _as_points(pts1, "pts1"), _as_points(pts2, "pts2")
    if len(p1) != len(p2):
        raise ValueError(f"pts1 and pts2 differ in length: {len(p1)} vs {len(p2)}")
    h1 = np.concatenate([p1, np.ones((len(p1), 1))], axis=1)
    h2 = np.concatenate([p2, np.ones((len(p2), 1))], axis=1)
    l2 = h1 @ F.T  # epilines in image 2: F x1
    l1 = h2 @ F  # epilines in image 1: F^T x2
    num = np.sum(h2 * l2, axis=1) ** 2
    n2 = l2[:, 0] ** 2 + l2[:, 1] ** 2
    n1 = l1[:, 0] ** 2 + l1[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = num * (1.0 / np.where(n2 == 0, 1.0, n2) + 1.0 / np.where(n1 == 0, 1.0, n1))
        sq = np.where((n1 == 0) | (n2 == 0), np.inf, sq)
        return np.sqrt(sq)


def wxbs_recall(F: Optional[np.ndarray], corrs: np.ndarray,
                thresholds: Sequence[float] = WXBS_THRESHOLDS) -> np.ndarray:
    """Share of the ground-truth correspondences ``corrs`` (``x1 y1 x2 y2``) with symmetric
    epipolar distance ``<= th`` for each threshold (the reference's
    ``fraction_of_gt_corrs_consisent_with_F``), float64 ``(len(thresholds),)``.

    ``F is None`` (estimation failed) scores 0 at every threshold. The reference metric raises
    on None (``assert Fm.shape``); an all-zero F, its natural stand-in, gives infinite distances
    there, i.e. the same zeros. A NaN F also scores 0 (NaN compares false), as in the reference.
    """
    c = _as_corrs(corrs)
    ths = np.asarray(thresholds, dtype=np.float64)
    if F is None:
        return np.zeros(len(ths))
    d = symmetric_epipolar_distance(F, c[:, :2], c[:, 2:])
    return (d[:, None] <= ths[None, :]).mean(axis=0)


def wxbs_maa(F: Optional[np.ndarray], corrs: np.ndarray,
             thresholds: Sequence[float] = WXBS_THRESHOLDS) -> float:
    """The mean of :func:`wxbs_recall` over the thresholds (0..19 px): the pair's mAA.

    Note the 0 px threshold counts only exact zeros, so in practice mAA <= 0.95."""
    return float(np.mean(wxbs_recall(F, corrs, thresholds)))


def estimate_fundamental_magsac(pts1: np.ndarray, pts2: np.ndarray, threshold: float = 0.25,
                                confidence: float = 0.999, max_iters: int = 100_000) -> Optional[np.ndarray]:
    """F (``x2^T F x1 = 0``) from matches by MAGSAC++ (``cv2.USAC_MAGSAC``), or None when there
    are fewer than 8 matches (none at all, of any shape, included) or OpenCV fails / returns no
    3x3 finite matrix.

    Defaults are the reference README's SIFT + MAGSAC++ WxBS baseline:
    ``cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, 0.25, 0.999, 100000)`` (threshold
    0.25 px, confidence 0.999, 100k iterations).
    """
    pts = sample_points(pts1, pts2, 8)
    if pts is None:
        return None
    try:
        F, _ = cv2.findFundamentalMat(*pts, cv2.USAC_MAGSAC, float(threshold), float(confidence), int(max_iters))
    except cv2.error:
        return None
    return _valid_model(F)
