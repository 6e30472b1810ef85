"""Run the wide-baseline benchmark's methods (:mod:`.wide_baseline_methods`) over its pairs
and score them with the reference protocols of :mod:`HSequences_bench.wide_baseline`
(docs/wide_baseline.md):

* **WxBS** (``list_wxbs_pairs``): tentative matches -> F by ``estimate_fundamental_magsac``
  -> ``wxbs_recall`` of the hand-labelled correspondences (0..19 px), mAA per pair;
* **EVD** (``list_evd_pairs``): -> H by ``estimate_homography_magsac`` ->
  ``evd_reprojection_error`` over the visible part of image 1; mAA over the pairs;
* **synthetic** extreme pairs made from HPatches-layout sequences by ``make_extreme_pair``
  (image 1 against image k squeezed by a tilt; the fixed set :data:`SYNTHETIC_K` x
  :data:`SYNTHETIC_TILTS`), scored with the EVD metric: the development stand-in for EVD.

Caches (reused unless ``overwrite``), each folder named by a hash of what changes its
contents (``tag.txt`` holds it in words): under ``<cache>/<Method.features_cache_name>/`` (the
extraction's settings and weights, shared by methods that only match differently)
``features/<image key>.npz`` (keypoints, descriptors, size, seconds; a file of the older
layout, ``<Method.cache_name>/features/``, is still read), and under
``<cache>/<Method.cache_name>/`` (also the matcher's settings) ``matches/<pair key>.npz`` (matches, their points,
keypoint counts, seconds, the view level of the matches and the seconds of each level) and
``estimates/<pair key>.<F|H>.npz`` (the MAGSAC++ model, inliers, seconds; OpenCV's USAC is
seeded, so a rerun gives the same model). The synthetic images are written once to
``<cache>/synthetic/<sequence>/``. Every file is written atomically (a temp file, then
``os.replace``); an unreadable cache file is computed again (both by the benchmarks' shared
:class:`~HSequences_bench.feature_store.NpzStore`).

One pair that cannot be processed (an unreadable image, a bad ground-truth file) is a
warning naming it and a failed score (WxBS recall 0, EVD error ``inf``), not a crash. A pair
with fewer matches than the estimator's minimal sample (:data:`MIN_MATCHES`; none at all
included) has no model, status ``no model``: WxBS recall 0, and on EVD the identity's error
(the reference README's stand-in for no H).

Seconds of a pair (:func:`pair_seconds`): the features of both images plus the matching. A
method matching view levels one after another (:meth:`Method.match_pair` answering a
:class:`MatchResult` with its ``level`` and the matching seconds of each level tried) whose
features carry the seconds of each level (``ImageFeatures.extra["level_seconds"]``) is charged
only the levels it tried: ``level_s[l] = f1[l] + f2[l] + matching[l]``, summed.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from HSequences_bench import wide_baseline as wb
from HSequences_bench.feature_store import NpzStore, load_npz, save_npz
from HSequences_bench.harness.method_base import MethodError
from HSequences_bench.harness.wide_baseline_method import (LEVEL_SECONDS, ImageFeatures, MatchResult, Method,
                                                            as_matches)
from keynet.base.files import atomic_write_bytes
from keynet.base.images import ImageReadError
from keynet.detection import ImageTooSmallError

PathLike = Union[str, os.PathLike]

BENCHMARKS = ("wxbs", "evd", "synthetic")
TITLES = {"wxbs": "WxBS v1.1 (fundamental matrix, MAGSAC++)", "evd": "EVD (homography, MAGSAC++)",
          "synthetic": "Synthetic extreme pairs from HPatches sequences (EVD metric; development proxy)"}
PLOT_TITLES = {"evd": "EVD: pairs within each mean reprojection error",
               "synthetic": "Synthetic extreme pairs (EVD metric)"}
#: The fixed synthetic set: image 1 against image k of each sequence, k squeezed by each tilt
#: along the x axis (``direction_deg`` 0), with ASIFT's anti-aliasing: 15 pairs a sequence,
#: from hard (k = 2, tilt 2) to beyond SIFT (tilt 4 and 6 on top of the sequence's own
#: viewpoint change: SIFT already fails on v_graffiti 1-2 at tilt 3).
SYNTHETIC_K: Tuple[int, ...] = (2, 3, 4, 5, 6)
SYNTHETIC_TILTS: Tuple[float, ...] = (2.0, 4.0, 6.0)
SYNTHETIC_DIRECTION = 0.0
#: Estimator settings (the reference README's), part of the estimate cache's file names.
ESTIMATORS = {"wxbs": ("F", "magsac-0.25-0.999-100000"), "evd": ("H", "magsac-0.5-0.999-100000"),
              "synthetic": ("H", "magsac-0.5-0.999-100000")}
#: The estimators' minimal samples: with fewer tentative matches there is no model, and the
#: pair gets the failed score (WxBS recall 0, EVD error ``inf``).
MIN_MATCHES = {"F": 8, "H": 4}
#: Errors of one pair (its images or ground truth), reported and scored as a failure.
PAIR_ERRORS = (ImageReadError, ImageTooSmallError, FileNotFoundError, ValueError, OSError, cv2.error)


class BenchInputError(ValueError):
    """The benchmark's input folders are unusable (message names the culprit)."""


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One image pair of a benchmark: ``name`` (the CSV's pair id), cache keys of the pair
    and of its images, the image files and the ground truth (``truth``: the
    :class:`~HSequences_bench.wide_baseline.WxBSPair`, the EVD pair or the synthetic spec)."""

    benchmark: str
    name: str
    key: str
    key1: str
    key2: str
    img1: Path
    img2: Path
    truth: object
    extra: Dict[str, object] = field(default_factory=dict)
    _gt: Optional[Tuple] = field(default=None, repr=False)

    def prepare(self, overwrite: bool = False) -> None:
        """Make what the pair needs that is not on disk yet (the synthetic image 2)."""
        if isinstance(self.truth, SyntheticSpec):
            self.truth.make(overwrite)

    def ground_truth(self) -> Tuple:
        """WxBS: ``(corrs,)``; EVD / synthetic: ``(H_gt, shape1, shape2)`` (read once)."""
        if self._gt is None:
            if self.benchmark == "wxbs":
                self._gt = (wb.read_wxbs_corrs(self.truth.corrs),)  # type: ignore[attr-defined]
            elif self.benchmark == "evd":
                t = self.truth
                self._gt = (wb.read_evd_homography(t.homography), wb.image_shape(t.img1),  # type: ignore[attr-defined]
                            wb.image_shape(t.img2))  # type: ignore[attr-defined]
            else:
                self._gt = self.truth.load()  # type: ignore[attr-defined]
        return self._gt


@dataclass
class SyntheticSpec:
    """A synthetic pair of :func:`~HSequences_bench.wide_baseline.make_extreme_pair`, kept at
    ``image2`` (PNG) and ``truth_file`` (``.npz``: H, the two image shapes)."""

    seq_dir: Path
    k: int
    tilt: float
    direction: float
    image2: Path
    truth_file: Path

    def make(self, overwrite: bool = False) -> None:
        if not overwrite and self.image2.is_file() and self.truth_file.is_file():
            return
        pair = wb.make_extreme_pair(self.seq_dir, self.k, self.tilt, self.direction)
        ok, png = cv2.imencode(".png", cv2.cvtColor(pair.img2, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode the synthetic image {self.image2}")
        atomic_write_bytes(self.image2, png.tobytes())
        _save_npz(self.truth_file, H=pair.H, shape1=np.array(pair.img1.shape[:2]),
                  shape2=np.array(pair.img2.shape[:2]))

    def load(self) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]:
        with np.load(self.truth_file, allow_pickle=False) as z:
            return z["H"], tuple(int(v) for v in z["shape1"]), tuple(int(v) for v in z["shape2"])


def wxbs_cases(root: PathLike, subset: str = "all") -> Tuple[List[Case], List[wb.IncompletePair]]:
    """The complete pairs of ``<root>/v1.1`` (``scan_wxbs_pairs``) as cases, and the pairs of
    the subset whose folder lacks an image or ``corrs.txt``."""
    pairs, incomplete = wb.scan_wxbs_pairs(root, subset)
    out = [Case("wxbs", p.pair_id, f"wxbs/{p.pair_id}", f"wxbs/{p.pair_id}/{p.img1.stem}",
                f"wxbs/{p.pair_id}/{p.img2.stem}", p.img1, p.img2, p, {"subset": p.subset}) for p in pairs]
    return out, incomplete


def evd_cases(root: PathLike) -> Tuple[List[Case], List[wb.IncompletePair]]:
    """The complete pairs of ``<root>/EVD`` (``scan_evd_pairs``) as cases, and the pairs whose
    ``2/`` image or ``h/`` file is missing."""
    pairs, incomplete = wb.scan_evd_pairs(root)
    return ([Case("evd", p.name, f"evd/{p.name}", f"evd/1/{p.name}", f"evd/2/{p.name}", p.img1, p.img2, p)
             for p in pairs], incomplete)


def synthetic_name(seq: str, k: int, tilt: float, direction: float) -> str:
    return f"{seq}_1_{k}_t{tilt:g}_d{direction:g}"


def synthetic_cases(seq_dirs: Sequence[PathLike], image_dir: PathLike, ks: Sequence[int] = SYNTHETIC_K,
                    tilts: Sequence[float] = SYNTHETIC_TILTS, direction: float = SYNTHETIC_DIRECTION) -> List[Case]:
    """For each HPatches-layout sequence folder, the pairs (1, k squeezed by tilt) for every
    ``k`` x ``tilt``; their images 2 are made (lazily, :meth:`Case.prepare`) under
    ``image_dir/<sequence>/``. A missing folder or file, a repeated sequence name or a bad
    ``k`` / tilt: :class:`BenchInputError`."""
    bad_k = [k for k in ks if int(k) != k or not 2 <= int(k) <= 6]
    if bad_k:
        raise BenchInputError(f"synthetic k must be image indices 2..6, got {bad_k[0]}")
    bad_t = [t for t in tilts if not (math.isfinite(t) and t >= 1.0)]
    if bad_t:
        raise BenchInputError(f"synthetic tilts must be >= 1, got {bad_t[0]:g}")
    out: List[Case] = []
    seen: Dict[str, Path] = {}
    for d in map(Path, seq_dirs):
        if not d.is_dir():
            raise BenchInputError(f"synthetic sequence folder not found: {d}")
        if d.name in seen:
            raise BenchInputError(f"two synthetic sequences named {d.name!r}: {seen[d.name]} and {d}")
        seen[d.name] = d
        need = [d / "1.ppm"] + [p for k in ks for p in (d / f"{int(k)}.ppm", d / f"H_1_{int(k)}")]
        lack = [p for p in need if not p.is_file()]
        if lack:
            raise BenchInputError(f"synthetic sequence {d} lacks {lack[0].name} (HPatches layout: 1.ppm..6.ppm, H_1_k)")
        for k in ks:
            for t in tilts:
                name = synthetic_name(d.name, int(k), float(t), float(direction))
                spec = SyntheticSpec(d, int(k), float(t), float(direction), Path(image_dir) / d.name / f"{name}.png",
                                     Path(image_dir) / d.name / f"{name}.npz")
                out.append(Case("synthetic", name, f"synthetic/{name}", f"synthetic/{d.name}/1",
                                f"synthetic/{d.name}/{name}", d / "1.ppm", spec.image2, spec,
                                {"k": int(k), "tilt": float(t)}))
    return out


# ----------------------------------------------------------------------------- caches
#: The old names of the shared store's npz helpers (:mod:`HSequences_bench.feature_store`).
_save_npz = save_npz
_load_npz = load_npz


@dataclass
class PairMatches:
    """Tentative matches of a pair: the matched points (K, 2) in full-resolution pixels, the
    keypoint counts, the time features + matching took (as computed, cached or not;
    :func:`pair_seconds`), the view level the matches come from and the seconds of each level
    tried (features of both images + matching; empty when the method does not give them)."""

    pts1: np.ndarray
    pts2: np.ndarray
    keypoints1: int
    keypoints2: int
    seconds: float
    level: int = 0
    level_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))


def pair_seconds(f1: ImageFeatures, f2: ImageFeatures, result: MatchResult, elapsed: float
                 ) -> Tuple[float, np.ndarray]:
    """``(seconds, per-level seconds)`` of a pair matched as ``result`` (``elapsed``: the
    seconds :meth:`Method.match_pair` took, used when it gives no ``level_seconds``).

    When both images' features carry ``extra["level_seconds"]`` (one entry per view level),
    the pair is charged the levels ``0..L`` it tried (``L``: ``result.level``, or the last
    level of ``result.level_seconds`` when more were tried): ``level_s[l] = f1[l] + f2[l] +
    matching[l]`` and ``seconds = sum(level_s)``, so a pair that stops at level 0 pays only
    level 0's features. Otherwise (or when ``result.level_seconds`` does not give one entry per
    level tried, so the per-level seconds are unknown and empty) the features' seconds
    (``f1.seconds + f2.seconds``, or of levels ``0..L``) plus the whole matching."""
    match_ls = np.asarray(result.level_seconds, dtype=np.float64).reshape(-1)
    matching = float(match_ls.sum()) if match_ls.size else float(elapsed)
    ls1, ls2 = f1.extra.get(LEVEL_SECONDS), f2.extra.get(LEVEL_SECONDS)
    last = max(int(result.level), len(match_ls) - 1)
    if ls1 is None or ls2 is None or np.size(ls1) <= last or np.size(ls2) <= last:
        return f1.seconds + f2.seconds + matching, np.zeros(0)
    features = (np.asarray(ls1, dtype=np.float64).reshape(-1)[:last + 1]
                + np.asarray(ls2, dtype=np.float64).reshape(-1)[:last + 1])
    if len(match_ls) != last + 1:
        return float(features.sum()) + matching, np.zeros(0)
    level_s = features + match_ls
    return float(level_s.sum()), level_s


class Store:
    """Features, matches and estimates of every method under ``cache_dir`` (None: no disk
    cache), reused unless ``overwrite``, on the shared :class:`~HSequences_bench.feature_store.NpzStore`.
    Counts what it computed and what it reused (``counts``: features and matches)."""

    def __init__(self, cache_dir: Optional[PathLike], overwrite: bool = False) -> None:
        self.npz = NpzStore(cache_dir, overwrite, counted=("features", "matches"))
        self.cache_dir = self.npz.cache_dir
        self.overwrite = self.npz.overwrite
        self.counts = self.npz.counts
        self._recent: Dict[Tuple[str, str], ImageFeatures] = {}

    def _path(self, method: Method, kind: str, key: str, suffix: str = ".npz") -> Optional[Path]:
        name, tag = ((method.features_cache_name, method.features_tag) if kind == "features"
                     else (method.cache_name, method.tag))
        return self.npz.path(name, f"{kind}/{key}{suffix}", tag)

    def _read(self, path: Optional[Path]) -> Optional[Dict[str, np.ndarray]]:
        return self.npz.read(path)

    def features(self, method: Method, key: str, image: Path) -> ImageFeatures:
        """The features of ``image`` (cache key ``key``) by ``method.extract``; a file of the
        older layout (under ``<Method.cache_name>/features/``) is still read."""
        mem = (method.features_cache_name, key)
        if mem in self._recent:
            return self._recent[mem]
        path = self._path(method, "features", key)
        legacy = None if path is None else self.cache_dir / method.cache_name / "features" / f"{key}.npz"
        f = self.npz.cached("features", [path, legacy], lambda: method.extract(image), encode_image_features,
                            decode_image_features)
        if len(self._recent) > 8:  # image 1 of the synthetic pairs is shared by a sequence's pairs
            self._recent.pop(next(iter(self._recent)))
        self._recent[mem] = f
        return f

    def matches(self, method: Method, case: Case) -> PairMatches:
        """The pair's matches by ``method.match_pair`` (cached with their level and the seconds
        of each level; a file written before they were kept reads as level 0, no per-level seconds)."""
        def compute() -> Tuple[PairMatches, Dict[str, np.ndarray]]:
            f1 = self.features(method, case.key1, case.img1)
            f2 = self.features(method, case.key2, case.img2)
            t0 = time.perf_counter()
            result = method.match_pair(f1, f2)
            elapsed = time.perf_counter() - t0
            m = as_matches(result.matches)
            seconds, level_s = pair_seconds(f1, f2, result, elapsed)
            pm = PairMatches(_points(f1.keypoints[m[:, 0], :2]), _points(f2.keypoints[m[:, 1], :2]),
                             len(f1.keypoints), len(f2.keypoints), seconds, int(result.level), level_s)
            return pm, {"matches": m, "match_level_seconds": np.asarray(result.level_seconds, np.float64).reshape(-1)}

        def encode(value: Tuple[PairMatches, Dict[str, np.ndarray]]) -> Dict[str, object]:
            pm, extra = value
            return dict(matches=extra["matches"], pts1=pm.pts1, pts2=pm.pts2, keypoints1=pm.keypoints1,
                        keypoints2=pm.keypoints2, seconds=pm.seconds, level=pm.level, level_seconds=pm.level_seconds,
                        match_level_seconds=extra["match_level_seconds"])

        def decode(z: Mapping[str, np.ndarray]) -> Optional[Tuple[PairMatches, Dict[str, np.ndarray]]]:
            if not {"pts1", "pts2", "keypoints1", "keypoints2", "seconds"} <= set(z):
                return None
            return PairMatches(_points(z["pts1"]), _points(z["pts2"]), int(z["keypoints1"]), int(z["keypoints2"]),
                               float(z["seconds"]), int(z["level"]) if "level" in z else 0,
                               np.asarray(z.get("level_seconds", np.zeros(0)), np.float64).reshape(-1)), {}

        path = self._path(method, "matches", case.key)
        return self.npz.cached("matches", [path], compute, encode, decode)[0]

    def estimate(self, method: Method, case: Case, pm: PairMatches) -> Tuple[Optional[np.ndarray], int, float]:
        """``(model or None, inliers, seconds)`` of the benchmark's MAGSAC++ estimator."""
        kind, setting = ESTIMATORS[case.benchmark]

        def compute() -> Tuple[Optional[np.ndarray], int, float]:
            t0 = time.perf_counter()
            if len(pm.pts1) < MIN_MATCHES[kind]:  # no model (the estimators say so too)
                model, inl = None, 0
            elif kind == "F":
                model = wb.estimate_fundamental_magsac(pm.pts1, pm.pts2)
                inl = count_inliers_f(model, pm.pts1, pm.pts2, 0.25)
            else:
                model = wb.estimate_homography_magsac(pm.pts1, pm.pts2)
                inl = count_inliers_h(model, pm.pts1, pm.pts2, 0.5)
            return model, inl, time.perf_counter() - t0

        def encode(value: Tuple[Optional[np.ndarray], int, float]) -> Dict[str, object]:
            model, inl, seconds = value
            return dict(model=model if model is not None else np.zeros(0), inliers=inl, seconds=seconds)

        def decode(z: Mapping[str, np.ndarray]) -> Optional[Tuple[Optional[np.ndarray], int, float]]:
            if not {"model", "inliers", "seconds"} <= set(z):
                return None
            return z["model"] if z["model"].shape == (3, 3) else None, int(z["inliers"]), float(z["seconds"])

        path = self._path(method, "estimates", case.key, f".{kind}.{setting}.npz")
        return self.npz.cached("estimates", [path], compute, encode, decode)


def encode_image_features(f: ImageFeatures) -> Dict[str, object]:
    """The arrays of a features file: keypoints, descriptors, size, seconds and ``x_<name>`` per extra array."""
    return dict(keypoints=f.keypoints, descriptors=f.descriptors, size=np.array(f.size), seconds=f.seconds,
                **{f"x_{k}": v for k, v in f.extra.items()})


def decode_image_features(z: Mapping[str, np.ndarray]) -> Optional[ImageFeatures]:
    """The features of a features file's arrays; None when it lacks one of the four needed."""
    if not {"keypoints", "descriptors", "size", "seconds"} <= set(z):
        return None
    return ImageFeatures(z["keypoints"], z["descriptors"], tuple(int(v) for v in z["size"]), float(z["seconds"]),
                         {k[2:]: z[k] for k in z if k.startswith("x_")})


def _points(a) -> np.ndarray:
    """(K, 2) float64 points; none at all (any empty shape) is (0, 2)."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, 2) if a.size == 0 or a.ndim != 2 else a


def count_inliers_f(F: Optional[np.ndarray], pts1: np.ndarray, pts2: np.ndarray, threshold: float) -> int:
    """Matches within ``threshold`` px Sampson distance of F (OpenCV USAC's inlier test for F)."""
    if F is None or len(pts1) == 0:
        return 0
    h1 = np.column_stack([pts1, np.ones(len(pts1))])
    h2 = np.column_stack([pts2, np.ones(len(pts2))])
    l2, l1 = h1 @ F.T, h2 @ F
    num = np.sum(h2 * l2, axis=1) ** 2
    den = l2[:, 0] ** 2 + l2[:, 1] ** 2 + l1[:, 0] ** 2 + l1[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return int(np.sum(num / den <= threshold ** 2))


def count_inliers_h(H: Optional[np.ndarray], pts1: np.ndarray, pts2: np.ndarray, threshold: float) -> int:
    """Matches whose image-1 point H maps within ``threshold`` px of its match (OpenCV's test for H)."""
    if H is None or len(pts1) == 0:
        return 0
    p = cv2.perspectiveTransform(pts1.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        return int(np.sum(np.linalg.norm(p - pts2, axis=1) <= threshold))


# ----------------------------------------------------------------------------- running
def _failed_row(method: Method, case: Case, why: str) -> Dict[str, object]:
    if case.benchmark == "wxbs":
        row = wb.wxbs_row(method.name, case.truth, np.zeros(len(wb.WXBS_THRESHOLDS)))  # type: ignore[arg-type]
    else:
        row = wb.evd_row(method.name, case.name, math.inf)
        row.update(case.extra)
    row.update(keypoints1=0, keypoints2=0, matches=0, inliers=0, seconds=float("nan"), ransac_s=float("nan"),
               status=f"failed: {why}", level="", level_s="")
    return row


def level_seconds_cell(level_s: np.ndarray) -> str:
    """The CSV's ``level_s``: the seconds of each level tried, ``;``-joined, 2 decimals ('' when unknown)."""
    return ";".join(f"{float(v):.2f}" for v in np.asarray(level_s).reshape(-1))


def score_pair(method: Method, case: Case, store: Store) -> Dict[str, object]:
    """The result row of ``method`` on ``case`` (raises the pair's errors)."""
    pm = store.matches(method, case)
    model, inliers, ransac_s = store.estimate(method, case, pm)
    gt = case.ground_truth()
    if case.benchmark == "wxbs":
        row = wb.wxbs_row(method.name, case.truth, wb.wxbs_recall(model, gt[0]))  # type: ignore[arg-type]
    else:
        H_gt, shape1, shape2 = gt
        # no model (too few matches, or the estimator found none): the identity, as the reference
        # README scores it (``if H is None: H = np.eye(3)``)
        error = wb.evd_reprojection_error(shape1, shape2, H_gt, model)
        row = wb.evd_row(method.name, case.name, error)
        row.update(case.extra)
    row.update(keypoints1=pm.keypoints1, keypoints2=pm.keypoints2, matches=len(pm.pts1), inliers=inliers,
               seconds=round(pm.seconds, 3), ransac_s=round(ransac_s, 3),
               status="ok" if model is not None else "no model", level=pm.level,
               level_s=level_seconds_cell(pm.level_seconds))
    return row


def run_cases(cases: Sequence[Case], methods: Sequence[Method], store: Store, progress: bool = True,
              desc: str = "pairs") -> Tuple[List[Dict[str, object]], List[str]]:
    """Every method on every case: the result rows (pair-major, methods in order) and the
    warnings of the pairs that failed (each also printed, naming the pair)."""
    rows: List[Dict[str, object]] = []
    warnings: List[str] = []
    bar = tqdm(cases, desc=desc, unit="pair", disable=not progress, file=sys.stderr)
    for case in bar:
        try:
            case.prepare(store.overwrite)
            prepared: Optional[str] = None
        except PAIR_ERRORS as exc:
            prepared = str(exc)
        for m in methods:
            bar.set_postfix_str(f"{case.name} {m.name}", refresh=True)
            why = prepared
            if why is None:
                try:
                    rows.append(score_pair(m, case, store))
                    continue
                except MethodError:  # the method cannot be built: the user's, not the pair's
                    raise
                except PAIR_ERRORS as exc:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            msg = f"warning: {case.benchmark} pair {case.name} ({m.name}): {why}"
            tqdm.write(msg, file=sys.stderr)
            warnings.append(msg)
            rows.append(_failed_row(m, case, why))
    return rows, warnings


# ----------------------------------------------------------------------------- reports
def _mean(values: Sequence[float]) -> float:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else float("nan")


def counts_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Markdown table per method: pairs, failed pairs, mean keypoints per image, mean tentative
    matches, mean MAGSAC++ inliers, mean seconds per pair (features of both images + matching,
    as computed; :func:`pair_seconds`), the mean view level the matches come from (0: the
    plain images) and the estimator's mean seconds."""
    lines = ["| method | pairs | failed | keypoints / image | tentative matches | inliers | s / pair | level "
             "| RANSAC s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in dict.fromkeys(str(r["method"]) for r in rows):
        sel = [r for r in rows if str(r["method"]) == m]
        ok = [r for r in sel if not str(r.get("status", "")).startswith("failed")]
        kp = _mean([(float(r["keypoints1"]) + float(r["keypoints2"])) / 2 for r in ok])
        lines.append(f"| {m} | {len(sel)} | {len(sel) - len(ok)} | {kp:.0f} | "
                     f"{_mean([r['matches'] for r in ok]):.1f} | {_mean([r['inliers'] for r in ok]):.1f} | "
                     f"{_mean([r['seconds'] for r in ok]):.1f} | {_mean([r.get('level', 0) for r in ok]):.2f} | "
                     f"{_mean([r['ransac_s'] for r in ok]):.2f} |")
    return "\n".join(lines) + "\n"


def skipped_markdown(skipped: Sequence[wb.IncompletePair]) -> str:
    """The pairs left out for lacking files (``--skip-incomplete``), one bullet each."""
    if not skipped:
        return ""
    return (f"Skipped {len(skipped)} incomplete pair(s):\n\n"
            + "".join(f"* {p.message}\n" for p in skipped) + "\n")


def summary_markdown(results: Mapping[str, Sequence[Mapping[str, object]]],
                     skipped: Optional[Mapping[str, Sequence[wb.IncompletePair]]] = None) -> str:
    """The report: per benchmark, the reference summary table (``wxbs_summary_table`` /
    ``evd_summary_table``), :func:`counts_table` and the pairs skipped for lacking files."""
    parts = []
    skipped = skipped or {}
    for b in BENCHMARKS:
        rows = results.get(b)
        if not rows and not skipped.get(b):
            continue
        part = f"## {TITLES[b]}\n\n"
        if rows:
            table = wb.wxbs_summary_table(rows) if b == "wxbs" else wb.evd_summary_table(rows)
            part += f"{table}\n{counts_table(rows)}"
        if skipped.get(b):
            part += ("\n" if rows else "") + skipped_markdown(skipped[b])
        parts.append(part)
    return "\n".join(parts)


def write_reports(results: Mapping[str, Sequence[Mapping[str, object]]], out_dir: PathLike, plot: bool = True,
                  header: str = "", skipped: Optional[Mapping[str, Sequence[wb.IncompletePair]]] = None) -> List[Path]:
    """``<benchmark>.csv`` (per pair) and ``<benchmark>.md`` (``write_results``), the combined
    ``wide_baseline.md`` (with the pairs ``skipped`` for lacking files) and, with ``plot``, the
    recall-versus-threshold PNGs; returns the paths."""
    out = Path(out_dir)
    paths: List[Path] = []
    for b in BENCHMARKS:
        rows = results.get(b)
        if rows:
            paths += wb.write_results(out / f"{b}.csv", rows, "wxbs" if b == "wxbs" else "evd")
    paths.append(wb.write_text_atomic(out / "wide_baseline.md", (header + "\n" if header else "")
                                      + summary_markdown(results, skipped)))
    if plot:
        for b in BENCHMARKS:
            rows = results.get(b)
            if not rows:
                continue
            if b == "wxbs":
                for subset in wb.SUBSETS:
                    curves = wb.wxbs_mean_curves(rows, subset)
                    if curves:
                        paths.append(wb.plot_recall_curves(
                            out / f"wxbs_recall_{subset}.png", wb.WXBS_THRESHOLDS, curves,
                            f"WxBS {subset}: GT correspondences consistent with F", "epipolar distance, px",
                            "share of GT correspondences"))
            else:
                paths.append(wb.plot_recall_curves(out / f"{b}_recall.png", wb.EVD_THRESHOLDS, wb.evd_curves(rows),
                                                   PLOT_TITLES[b], "mean reprojection error, px", "share of pairs"))
    return paths

