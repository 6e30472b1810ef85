"""Two wide-baseline benchmarks: WxBS (fundamental matrix) and EVD (homography).

The data layout, the metrics and the estimator settings follow the reference package
``wxbs-benchmark`` 0.0.4 (Apache-2.0, D. Mishkin; ``dataset.py``, ``metrics.py``,
``evaluation.py`` and its README), re-implemented here without torch/kornia so this module
imports only numpy, OpenCV, the standard library and the project's base (its atomic writer;
matplotlib only inside :func:`plot_recall_curves`). ``tests/HSequences_bench/test_wide_baseline.py`` pins every
metric to the reference on fixed inputs.

* **WxBS v1.1**: ``<root>/v1.1/<group>/<pair>/{01,02}.(png|jpg)`` and ``corrs.txt`` (hand
  labelled correspondences, one ``x1 y1 x2 y2`` per line; ``crossval_errors.txt`` beside).
  The pairs :data:`WXBS_VALIDATION_PAIRS` are the validation subset, the rest the test one.
  Metric: the share of ground-truth correspondences whose symmetric epipolar distance to
  the estimated F is within 0..19 px (:data:`WXBS_THRESHOLDS`); mAA = the mean of that curve.
* **EVD**: ``<root>/EVD/{1,2,h}/`` (view 1, view 2, homography ``h/<name>.txt`` mapping
  view-1 pixels to view 2). Metric: the mean reprojection error over the part of image 1
  visible in image 2, per pair; the curve is the share of pairs under each of
  :data:`EVD_THRESHOLDS` (ten, log-spaced from 1 to 20 px); mAA its mean.

Conventions: points are pixels ``(x, y)`` with integer coordinates at pixel centres (as
OpenCV's warps); F satisfies ``x2^T F x1 = 0`` (image 1 -> 2, as ``cv2.findFundamentalMat``);
H maps image 1 to image 2. Images come back RGB (as the reference reads them with PIL).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from keynet.base.files import atomic_write_bytes

PathLike = Union[str, os.PathLike]

WXBS_VERSION = "v1.1"
#: Pair folders the reference ``WxBSDataset(subset='val')`` keeps apart from the test pairs.
WXBS_VALIDATION_PAIRS: Tuple[str, ...] = ("kyiv_dolltheater2", "petrzin")
#: Epipolar-distance thresholds of the reference ``evaluate_Fs``: 0, 1, ..., 19 px.
WXBS_THRESHOLDS = np.arange(20)
#: Reprojection-error thresholds of the reference ``get_mAA``/``evaluate_Hs``: ten from 1 to 20 px.
EVD_THRESHOLDS = np.logspace(np.log2(1.0), np.log2(20), 10, base=2.0)
#: The "registered" threshold for the count of EVD pairs.
EVD_REGISTERED_PX = 10.0
WXBS_THRESHOLDS.setflags(write=False)
EVD_THRESHOLDS.setflags(write=False)

_WXBS_IMAGE_EXTENSIONS = (".png", ".jpg")  # the reference tries 01.png, then 01.jpg
SUBSETS = ("val", "test")


# --------------------------------------------------------------------------- small readers


def _short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters: safe inside a one-line message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _read_matrix(path: Path, rows: int, cols: int, what: str) -> np.ndarray:
    """A ``rows x cols`` matrix of finite numbers from a whitespace (or tab) separated text file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    values: List[List[float]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            row = [float(x) for x in line.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: {what} line is not numbers: {_short(line)}") from None
        if len(row) != cols:
            raise ValueError(f"{path}:{lineno}: {what} line has {len(row)} numbers, expected {cols}: {_short(line)}")
        values.append(row)
    if len(values) != rows:
        raise ValueError(f"{path}: {what} has {len(values)} rows, expected {rows}")
    m = np.array(values, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{path}: {what} has non-finite entries")
    return m


def read_image(path: PathLike, grey: bool = False) -> np.ndarray:
    """An image as uint8 RGB ``(H, W, 3)`` (the reference reads with PIL), or ``(H, W)`` when ``grey``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image: {p}")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_shape(path: PathLike) -> Tuple[int, int]:
    """``(height, width)`` of an image file (what the EVD metric takes)."""
    return tuple(read_image(path, grey=True).shape[:2])  # type: ignore[return-value]


# --------------------------------------------------------------------------- WxBS dataset


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


def _find_image(folder: Path, stem: str) -> Path:
    for ext in _WXBS_IMAGE_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise FileNotFoundError(f"WxBS pair without image {stem}.png/{stem}.jpg: {folder}")


def list_wxbs_pairs(root: PathLike, subset: str = "all", version: str = WXBS_VERSION) -> List[WxBSPair]:
    """The WxBS pairs under ``<root>/<version>``, in the reference's order (groups, then pairs, sorted).

    ``subset``: ``'val'`` (:data:`WXBS_VALIDATION_PAIRS`), ``'test'`` (the others) or ``'all'``;
    each pair carries its subset. Unlike the reference, which silently skips a folder without
    ``01.png``/``01.jpg``, a pair folder missing an image or ``corrs.txt`` is an error
    (``FileNotFoundError`` naming it); no pair folder at all is a ``ValueError``.
    """
    if subset not in SUBSETS + ("all",):
        raise ValueError(f"subset must be 'val', 'test' or 'all', got {subset!r}")
    data_dir = wxbs_data_dir(root, version)
    pairs: List[WxBSPair] = []
    n_found = 0
    for group in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for d in sorted(p for p in group.iterdir() if p.is_dir() and not p.name.startswith(".")):
            n_found += 1
            pair_subset = "val" if d.name in WXBS_VALIDATION_PAIRS else "test"
            img1, img2 = _find_image(d, "01"), _find_image(d, "02")
            corrs = d / "corrs.txt"
            if not corrs.is_file():
                raise FileNotFoundError(f"WxBS pair without corrs.txt: {d}")
            errs = d / "crossval_errors.txt"
            if subset in ("all", pair_subset):
                pairs.append(WxBSPair(group.name, d.name, img1, img2, corrs, pair_subset,
                                      errs if errs.is_file() else None))
    if n_found == 0:
        raise ValueError(f"no WxBS pair folders (<group>/<pair>/) under {data_dir}")
    return pairs


def read_wxbs_corrs(path: PathLike) -> np.ndarray:
    """The ground-truth correspondences of ``corrs.txt``: ``(N, 4)`` float64 ``x1 y1 x2 y2``.

    Blank lines and ``#`` comments are skipped (as ``np.loadtxt``, which the reference uses);
    a line that is not four finite numbers is a ``ValueError`` naming ``file:line``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"WxBS correspondences not found: {p}")
    rows: List[List[float]] = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
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


# --------------------------------------------------------------------------- EVD dataset


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


def list_evd_pairs(root: PathLike) -> List[EVDPair]:
    """The EVD pairs: every file of ``EVD/1/`` (sorted, as the reference), with ``EVD/2/<same>``
    and ``EVD/h/<stem>.txt``; the name is the file name before its first dot (as the reference).

    A missing ``2/`` image or ``h/`` file is a ``FileNotFoundError`` naming it.
    """
    d = evd_data_dir(root)
    for sub in ("1", "2", "h"):
        if not (d / sub).is_dir():
            raise FileNotFoundError(f"EVD folder missing: {d / sub}")
    pairs: List[EVDPair] = []
    for f in sorted(p for p in (d / "1").iterdir() if p.is_file() and not p.name.startswith(".")):
        img2, h = d / "2" / f.name, d / "h" / (Path(f.name).stem + ".txt")
        for need in (img2, h):
            if not need.is_file():
                raise FileNotFoundError(f"EVD pair {f.name}: missing {need}")
        pairs.append(EVDPair(f.name.split(".")[0], f, img2, h))
    if not pairs:
        raise ValueError(f"no EVD images in {d / '1'}")
    return pairs


def read_evd_homography(path: PathLike) -> np.ndarray:
    """The 3x3 ground-truth homography of ``h/<name>.txt`` (view 1 -> view 2), divided by ``H[2, 2]``
    as the reference does. Entries are space or tab separated."""
    p = Path(path)
    H = _read_matrix(p, 3, 3, "EVD homography")
    if H[2, 2] == 0:
        raise ValueError(f"{p}: EVD homography has H[2,2] = 0")
    return H / H[2, 2]


# --------------------------------------------------------------------------- WxBS metric


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) points, got shape {a.shape}")
    return a


def _as_corrs(corrs: np.ndarray) -> np.ndarray:
    c = np.asarray(corrs, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 4 or len(c) == 0:
        raise ValueError(f"ground-truth correspondences must be (N>0, 4) x1 y1 x2 y2, got shape {c.shape}")
    return c


def _as_3x3(M: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(M, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"{name} must be 3x3, got shape {m.shape}")
    return m


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


# --------------------------------------------------------------------------- EVD metric


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


# --------------------------------------------------------------------------- MAGSAC++ estimators


def _match_points(pts1: np.ndarray, pts2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    p1, p2 = _as_points(pts1, "pts1"), _as_points(pts2, "pts2")
    if len(p1) != len(p2):
        raise ValueError(f"pts1 and pts2 differ in length: {len(p1)} vs {len(p2)}")
    return np.ascontiguousarray(p1), np.ascontiguousarray(p2)


def _valid_model(M) -> Optional[np.ndarray]:
    if M is None:
        return None
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (3, 3) or not np.all(np.isfinite(M)) or not np.any(M):
        return None
    return M


def estimate_fundamental_magsac(pts1: np.ndarray, pts2: np.ndarray, threshold: float = 0.25,
                                confidence: float = 0.999, max_iters: int = 100_000) -> Optional[np.ndarray]:
    """F (``x2^T F x1 = 0``) from matches by MAGSAC++ (``cv2.USAC_MAGSAC``), or None when there
    are fewer than 8 matches or OpenCV fails / returns no 3x3 finite matrix.

    Defaults are the reference README's SIFT + MAGSAC++ WxBS baseline:
    ``cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, 0.25, 0.999, 100000)`` (threshold
    0.25 px, confidence 0.999, 100k iterations).
    """
    p1, p2 = _match_points(pts1, pts2)
    if len(p1) < 8:
        return None
    try:
        F, _ = cv2.findFundamentalMat(p1, p2, cv2.USAC_MAGSAC, float(threshold), float(confidence), int(max_iters))
    except cv2.error:
        return None
    return _valid_model(F)


def estimate_homography_magsac(pts1: np.ndarray, pts2: np.ndarray, threshold: float = 0.5,
                               confidence: float = 0.999, max_iters: int = 100_000) -> Optional[np.ndarray]:
    """H (image 1 -> 2) from matches by MAGSAC++ (``cv2.USAC_MAGSAC``), or None when there are
    fewer than 4 matches or OpenCV fails.

    Defaults are the reference README's EVD baselines: threshold 0.5 px, 100k iterations and
    the intended confidence 0.999. (The README passes them positionally,
    ``cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 0.5, 0.999, 100000)``, where the 5th slot
    is the output ``mask``, so there the 0.999 is dropped and OpenCV's default 0.995 applies;
    here they are passed by keyword.) The README then scores a failed H as the identity:
    :func:`evd_reprojection_error` does that for None.
    """
    p1, p2 = _match_points(pts1, pts2)
    if len(p1) < 4:
        return None
    try:
        H, _ = cv2.findHomography(p1, p2, cv2.USAC_MAGSAC, ransacReprojThreshold=float(threshold),
                                  maxIters=int(max_iters), confidence=float(confidence))
    except cv2.error:
        return None
    H = _valid_model(H)
    if H is None or H[2, 2] == 0:
        return None
    return H / H[2, 2]


# --------------------------------------------------------------------------- synthetic EVD-like pairs


@dataclass(frozen=True, eq=False)
class ExtremePair:
    """A synthetic extreme-view pair: ``img2`` shows ``img1``'s scene where ``H`` maps it."""

    name: str
    img1: np.ndarray
    img2: np.ndarray
    H: np.ndarray  # image-1 pixels -> img2 pixels
    k: int
    tilt: float
    direction_deg: float


def tilt_matrix(tilt: float, direction_deg: float = 0.0) -> np.ndarray:
    """The 3x3 affine tilt ``I + (1/t - 1) d d^T``: lengths along ``d = (cos a, sin a)`` (image
    axes: x right, y down) shrink by ``t``, those across ``d`` are kept (ASIFT's tilt)."""
    if not (math.isfinite(tilt) and tilt >= 1.0):
        raise ValueError(f"tilt must be a finite number >= 1, got {tilt!r}")
    a = math.radians(direction_deg)
    d = np.array([math.cos(a), math.sin(a)])
    A = np.eye(3)
    A[:2, :2] += (1.0 / tilt - 1.0) * np.outer(d, d)
    return A


def _directional_blur(img: np.ndarray, sigma: float, direction_deg: float) -> np.ndarray:
    """Gaussian blur of std ``sigma`` along the direction (0.5 px across, so any angle is smooth)."""
    a = math.radians(direction_deg)
    d = np.array([math.cos(a), math.sin(a)])
    r = int(math.ceil(3 * sigma))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    along = xx * d[0] + yy * d[1]
    across = -xx * d[1] + yy * d[0]
    kernel = np.exp(-0.5 * (along / sigma) ** 2 - 0.5 * (across / 0.5) ** 2)
    kernel /= kernel.sum()
    out = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(out), 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out.astype(img.dtype)


def make_extreme_pair(seq_dir: PathLike, k: int = 2, tilt: float = 4.0, direction_deg: float = 0.0,
                      antialias: bool = True) -> ExtremePair:
    """A deterministic EVD-like pair from an HPatches-layout sequence (``1.ppm``..``6.ppm``,
    ``H_1_k`` mapping image-1 pixels to image k): ``img1`` = image 1 and ``img2`` = image k
    squeezed by ``tilt`` (e.g. 4, 6, 8) along ``direction_deg`` (:func:`tilt_matrix`), on a
    canvas just holding the whole tilted image k; ``H = T A H_1_k`` (``T`` the shift onto the
    canvas), normalised to ``H[2,2] = 1``.

    With ``antialias`` image k is first blurred along the squeeze by ``0.8 sqrt(t^2 - 1)`` px
    (ASIFT's anti-aliasing filter), a symmetric kernel, so point positions are unchanged.
    """
    d = Path(seq_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {d}")
    if int(k) != k or not 2 <= k <= 6:
        raise ValueError(f"k must be an image index 2..6, got {k!r}")
    k = int(k)
    A = tilt_matrix(float(tilt), float(direction_deg))
    img1 = read_image(d / "1.ppm")
    imgk = read_image(d / f"{k}.ppm")
    H1k = _read_matrix(d / f"H_1_{k}", 3, 3, "HPatches homography")
    hk, wk = imgk.shape[:2]
    corners = np.array([[0, 0], [wk - 1, 0], [wk - 1, hk - 1], [0, hk - 1]], dtype=np.float64)
    warped = corners @ A[:2, :2].T
    lo = np.floor(warped.min(axis=0))
    hi = warped.max(axis=0)
    size = (int(math.ceil(hi[0] - lo[0])) + 1, int(math.ceil(hi[1] - lo[1])) + 1)  # (w, h)
    T = np.array([[1.0, 0.0, -lo[0]], [0.0, 1.0, -lo[1]], [0.0, 0.0, 1.0]])
    M = T @ A
    src = imgk
    if antialias and tilt > 1.0:
        src = _directional_blur(imgk, 0.8 * math.sqrt(tilt * tilt - 1.0), direction_deg)
    img2 = cv2.warpPerspective(src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    H = M @ H1k
    H = H / H[2, 2]
    name = f"{d.name}_1_{k}_t{tilt:g}_d{direction_deg:g}"
    return ExtremePair(name, img1, img2, H, k, float(tilt), float(direction_deg))


# --------------------------------------------------------------------------- results


def _atomic_write_text(path: PathLike, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    return _atomic_write_text(path, text)


def write_csv_atomic(path: PathLike, rows: Sequence[Mapping[str, object]],
                     fieldnames: Optional[Sequence[str]] = None) -> Path:
    """Write ``rows`` (dicts) as CSV atomically; columns are ``fieldnames`` or the keys in first-seen order."""
    if fieldnames is None:
        names: Dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        fieldnames = list(names)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r))
    return _atomic_write_text(path, buf.getvalue())


def _recall_key(th: float) -> str:
    return f"recall@{float(th):g}px"


def wxbs_row(method: str, pair: WxBSPair, recall: Sequence[float],
             thresholds: Sequence[float] = WXBS_THRESHOLDS) -> Dict[str, object]:
    """A per-pair WxBS result row: method, pair id, group, subset, mAA and ``recall@<th>px`` columns."""
    rec = [float(x) for x in recall]
    if len(rec) != len(thresholds):
        raise ValueError(f"recall has {len(rec)} values for {len(thresholds)} thresholds")
    row: Dict[str, object] = {"method": method, "pair": pair.pair_id, "group": pair.group,
                              "subset": pair.subset, "mAA": float(np.mean(rec))}
    row.update({_recall_key(th): r for th, r in zip(thresholds, rec)})
    return row


def evd_row(method: str, pair_name: str, error: float) -> Dict[str, object]:
    """A per-pair EVD result row: method, pair name and mean reprojection error (px)."""
    return {"method": method, "pair": pair_name, "error_px": float(error)}


def _field(row: Mapping[str, object], key: str, i: int):
    if key not in row:
        raise ValueError(f"result row {i} has no {key!r} column")
    return row[key]


def _methods(rows: Sequence[Mapping[str, object]]) -> List[str]:
    return list(dict.fromkeys(str(_field(r, "method", i)) for i, r in enumerate(rows)))


def wxbs_summary_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Markdown table per method: mean per-pair mAA on the val pairs and on the test pairs, apart."""
    lines = ["| method | val mAA | val pairs | test mAA | test pairs |", "|---|---:|---:|---:|---:|"]
    for m in _methods(rows):
        cells = [m]
        for s in SUBSETS:
            vals = [float(_field(r, "mAA", i)) for i, r in enumerate(rows)
                    if str(r["method"]) == m and str(_field(r, "subset", i)) == s]
            cells += [f"{np.mean(vals):.3f}" if vals else "-", str(len(vals))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evd_summary_table(rows: Sequence[Mapping[str, object]], px: float = EVD_REGISTERED_PX) -> str:
    """Markdown table per method: mAA over :data:`EVD_THRESHOLDS` and pairs with error <= ``px``."""
    lines = [f"| method | mAA | pairs <= {px:g} px |", "|---|---:|---:|"]
    for m in _methods(rows):
        errs = [float(_field(r, "error_px", i)) for i, r in enumerate(rows) if str(r["method"]) == m]
        lines.append(f"| {m} | {evd_maa(errs):.3f} | {evd_pairs_under(errs, px)} / {len(errs)} |")
    return "\n".join(lines) + "\n"


def write_results(csv_path: PathLike, rows: Sequence[Mapping[str, object]], benchmark: str) -> Tuple[Path, Path]:
    """Write the per-pair ``rows`` to ``csv_path`` and the per-method summary table beside it
    (same name, ``.md``), both atomically. ``benchmark``: ``'wxbs'`` or ``'evd'``."""
    if benchmark not in ("wxbs", "evd"):
        raise ValueError(f"benchmark must be 'wxbs' or 'evd', got {benchmark!r}")
    if not rows:
        raise ValueError("no result rows to write")
    table = wxbs_summary_table(rows) if benchmark == "wxbs" else evd_summary_table(rows)
    p = write_csv_atomic(csv_path, rows)
    return p, _atomic_write_text(p.with_suffix(".md"), table)


def wxbs_mean_curves(rows: Sequence[Mapping[str, object]], subset: str = "test",
                     thresholds: Sequence[float] = WXBS_THRESHOLDS) -> Dict[str, np.ndarray]:
    """Per method, the mean recall curve over the pairs of ``subset`` (the reference's 'average')."""
    out: Dict[str, np.ndarray] = {}
    for m in _methods(rows):
        sel = [r for r in rows if str(r["method"]) == m and str(r.get("subset")) == subset]
        if sel:
            out[m] = np.array([[float(_field(r, _recall_key(th), i)) for th in thresholds]
                               for i, r in enumerate(sel)]).mean(axis=0)
    return out


def evd_curves(rows: Sequence[Mapping[str, object]],
               thresholds: Sequence[float] = EVD_THRESHOLDS) -> Dict[str, np.ndarray]:
    """Per method, the share of pairs under each threshold (the reference's 'average')."""
    return {m: evd_accuracy([float(_field(r, "error_px", i)) for i, r in enumerate(rows)
                             if str(r["method"]) == m], thresholds) for m in _methods(rows)}


def plot_recall_curves(path: PathLike, thresholds: Sequence[float], curves: Mapping[str, Sequence[float]],
                       title: str = "", xlabel: str = "threshold, px", ylabel: str = "recall") -> Path:
    """Plot one recall-versus-threshold curve per method to an image file (matplotlib, Agg
    canvas, no global backend change), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ths = np.asarray(thresholds, dtype=np.float64)
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=np.float64)
        if c.shape != ths.shape:
            raise ValueError(f"curve {name!r} has {c.size} values for {ths.size} thresholds")
        ax.plot(ths, c, "-x", label=name)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True)
    if curves:
        ax.legend()
    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=(p.suffix.lstrip(".") or "png"))
    atomic_write_bytes(p, buf.getvalue())
    return p
