"""Rotation benchmark: protocol and metrics (see docs/rotation.md).

Two protocols, each a list of :class:`RotationCase` (a source image, a rotated destination
image and the exact homography between them):

* ``pairs``: every HSequences pair (1, k), image k additionally rotated about its centre by
  each angle; the homography is ``H_rot @ H_1k`` (:func:`pair_cases`);
* ``single`` (Roto-360 style): an image against itself rotated by each angle; the
  homography is ``H_rot`` (:func:`single_cases`).

Rotations are :func:`keynet.base.geometry.rotation_homography` (counter-clockwise on screen, the
canvas expanded so that nothing is cropped; black outside the image). Per case and method,
:func:`pair_metrics` computes the main benchmark's metrics with its settings
(:class:`~HSequences_bench.evaluate.BenchConfig`: common region, top-k, circle-overlap
repeatability, mutual nearest-neighbour matching) plus the orientation error of the
repeated points. A method is a plain callable on a grey image (:class:`Method`), so the
protocol runs on anything that returns keypoints, descriptors and orientations.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from HSequences_bench.evaluate import BenchConfig
from HSequences_bench.hsequences import image_shape, sequence_pairs
from HSequences_bench.matching import match_distances, matching_scores, mma_precision, mutual_nearest_neighbours
from HSequences_bench.repeatability import compute_repeatability
from keynet.base.geometry import (angle_difference, common_region_masks, invert_homography, points_in_mask,
                             rotation_homography, transfer_orientation, warp_points)
from keynet.base.images import read_image_grey

PathLike = Union[str, os.PathLike]

PROTOCOLS = ("pairs", "single")
#: Default angles (degrees, counter-clockwise on screen) of each protocol.
DEFAULT_ANGLES: Dict[str, Tuple[float, ...]] = {
    "pairs": (0, 15, 30, 45, 60, 90, 135, 180, 225, 270, 315),
    "single": tuple(range(0, 360, 10)),
}
#: Pixel thresholds of the MMA / matching-score columns.
THRESHOLDS = (3, 5)


def default_config() -> BenchConfig:
    """The main benchmark's settings (top 1000 points in the common region, overlap 0.6,
    radius 30 px, ...) with the matching metrics at :data:`THRESHOLDS`."""
    return BenchConfig(thresholds=THRESHOLDS)


class FeatureSet(NamedTuple):
    """Features of one image. ``keypoints``: (N, >=4) x, y, scale, score; ``descriptors``:
    (N, D) rows matching the keypoints; ``orientations``: (N,) degrees (OpenCV's
    ``KeyPoint.angle`` convention) or None for an upright method."""
    keypoints: np.ndarray
    descriptors: np.ndarray
    orientations: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Method:
    """A method under test. ``extract``: grey float32 image (0..255 for 8-bit images) ->
    ``(keypoints, descriptors, orientations or None)``; ``distance``: 'l2' or 'hamming'
    (packed uint8 descriptors); ``tag``: whatever changes its output (weights, number of
    points), part of the feature-cache key."""
    name: str
    extract: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]
    distance: str = "l2"
    tag: str = ""


@dataclass(frozen=True)
class ImageRef:
    """An image file rotated by ``angle`` degrees; ``key`` names the file in the cache
    (``<data folder>/<sequence>/<image>``)."""
    path: Path
    key: str
    angle: float = 0.0


@dataclass
class RotationCase:
    """One evaluated pair: ``src`` -> ``dst`` with the homography between them."""
    protocol: str
    sequence: str
    image: int  # pairs: k of the pair (1, k); single: the image index
    angle: float
    src: ImageRef
    dst: ImageRef
    h_src_to_dst: np.ndarray
    shape_src: Tuple[int, int]
    shape_dst: Tuple[int, int]

    @property
    def h_dst_to_src(self) -> np.ndarray:
        return invert_homography(self.h_src_to_dst)


class AngleError(ValueError):
    """An unusable angle list (the message says why)."""


# ----------------------------------------------------------------------------- protocol
def parse_angles(tokens: Sequence[str]) -> List[float]:
    """Angles in degrees from command-line tokens: numbers (``15``, ``22.5``), comma lists
    (``0,90``) or inclusive ranges ``start:stop:step`` (``0:350:10``). Each must lie in
    [0, 360) and appear once. Raises :class:`AngleError`."""
    out: List[float] = []
    for tok in (t for raw in tokens for t in str(raw).split(",")):
        tok = tok.strip()
        if not tok:
            continue
        try:
            if ":" in tok:
                start, stop, step = (float(v) for v in tok.split(":"))
                if not step > 0:
                    raise AngleError(f"angle range {tok!r}: the step must be > 0")
                n = int(math.floor((stop - start) / step + 1e-9)) + 1
                out += [start + i * step for i in range(max(n, 0))]
            else:
                out.append(float(tok))
        except ValueError as exc:
            if isinstance(exc, AngleError):
                raise
            raise AngleError(f"bad angle {tok!r}: expected a number or start:stop:step") from None
    if not out:
        raise AngleError("the angle list is empty")
    bad = [a for a in out if not (math.isfinite(a) and 0.0 <= a < 360.0)]
    if bad:
        raise AngleError(f"angles must be in [0, 360) degrees, got {bad[0]:g}")
    if len(set(out)) != len(out):
        raise AngleError(f"repeated angle in {', '.join(f'{a:g}' for a in out)}")
    return out


def rotate_image(image: np.ndarray, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` rotated about its centre by ``angle`` degrees (counter-clockwise on screen)
    onto an expanded canvas (bilinear, black outside); returns ``(rotated, H)``, ``H``
    mapping pixels of ``image`` to the rotated one. 0 degrees returns a copy."""
    h_rot, (h, w) = rotation_homography(image.shape[:2], angle)
    if float(angle) % 360.0 == 0.0:
        return np.array(image, copy=True), h_rot
    out = cv2.warpPerspective(image, h_rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    return out, h_rot


def read_grey_float(path: PathLike) -> np.ndarray:
    """An image file as a 2-D float32 grey array on the 0..255 scale (8-bit as read; 16-bit
    divided by 257; float images scaled so that their maximum is 255)."""
    img = read_image_grey(path)
    if img.dtype == np.uint8:
        return img.astype(np.float32)
    if img.dtype == np.uint16:
        return (img.astype(np.float32) / 257.0).astype(np.float32)
    img = img.astype(np.float32)
    return img / max(float(img.max()), 1e-12) * 255.0


def load_image(ref: ImageRef) -> np.ndarray:
    """The grey float32 image of ``ref`` (read, then rotated by its angle)."""
    return rotate_image(read_grey_float(ref.path), ref.angle)[0].astype(np.float32)


def _ref(data_dir: PathLike, sequence: str, index: int, angle: float = 0.0) -> ImageRef:
    d = Path(data_dir)
    return ImageRef(d / sequence / f"{index}.ppm", f"{d.resolve().name}/{sequence}/{index}", float(angle))


def pair_cases(data_dir: PathLike, sequence: str, angles: Sequence[float], max_pairs: int = 0) -> List[RotationCase]:
    """The ``pairs`` protocol of one sequence: pair (1, k), image k rotated by each angle,
    ``H = H_rot @ H_1k``. ``max_pairs``: only the first pairs (k = 2, 3, ...); 0 = all."""
    cases = []
    for n, pair in enumerate(sequence_pairs(data_dir, sequence)):
        if max_pairs and n >= max_pairs:
            break
        for a in angles:
            h_rot, shape = rotation_homography(pair.shape_dst, a)
            cases.append(RotationCase("pairs", sequence, pair.k, float(a), _ref(data_dir, sequence, 1),
                                      _ref(data_dir, sequence, pair.k, a), h_rot @ pair.h_src_to_dst,
                                      pair.shape_src, shape))
    return cases


def single_cases(data_dir: PathLike, sequence: str, angles: Sequence[float], images: Sequence[int] = (1,)
                 ) -> List[RotationCase]:
    """The ``single`` protocol of one sequence: each of ``images`` against itself rotated by
    each angle, ``H = H_rot``."""
    cases = []
    for i in images:
        ref = _ref(data_dir, sequence, i)
        shape = image_shape(ref.path)
        for a in angles:
            h_rot, shape_rot = rotation_homography(shape, a)
            cases.append(RotationCase("single", sequence, int(i), float(a), ref, _ref(data_dir, sequence, i, a),
                                      h_rot, shape, shape_rot))
    return cases


# ------------------------------------------------------------------------------ metrics
def _top_k(points: np.ndarray, k: Optional[int]) -> np.ndarray:
    """Indices of the ``k`` best scores (the main benchmark's ``argsort(-score)[:k]``)."""
    return np.arange(points.shape[0]) if not k else np.argsort(-1 * points[:, 3])[:k]


def _select(features: FeatureSet, mask: np.ndarray, top_k: Optional[int]) -> FeatureSet:
    """The features inside ``mask``, then the ``top_k`` best (as the main benchmark)."""
    kpts = np.asarray(features.keypoints)
    inside, _ = points_in_mask(kpts[:, :2], mask)
    idx = np.nonzero(inside)[0]
    idx = idx[_top_k(kpts[idx], top_k)]
    ori = None if features.orientations is None else np.asarray(features.orientations)[idx]
    return FeatureSet(kpts[idx].astype(np.float64), np.asarray(features.descriptors)[idx], ori)


def _same_point(kpts: np.ndarray) -> Optional[List[np.ndarray]]:
    """For each row, the rows with the same ``x, y, scale`` (a keypoint given several
    orientations, as SIFT does); None when every row is distinct."""
    _, inv, counts = np.unique(kpts[:, :3], axis=0, return_inverse=True, return_counts=True)
    if counts.size == len(kpts):
        return None
    inv = inv.reshape(-1)
    groups = [np.nonzero(inv == g)[0] for g in range(counts.size)]
    return [groups[g] for g in inv]


def orientation_errors(src: FeatureSet, dst: FeatureSet, correspondences: np.ndarray,
                       h_src_to_dst: np.ndarray) -> np.ndarray:
    """Orientation error (degrees, [0, 180]) of corresponding points: the source orientation
    carried through the homography against the destination one. ``correspondences``:
    ``(K, 2)`` ``[dst_index, src_index]`` (as :func:`compute_repeatability`). A point given
    several orientations at one location (SIFT) is compared through its closest pair of
    orientations, since the one-to-one correspondences pair such copies arbitrarily."""
    if src.orientations is None or dst.orientations is None or len(correspondences) == 0:
        return np.zeros(0)
    c = np.asarray(correspondences, dtype=np.int64).reshape(-1, 2)
    ori_dst = np.asarray(dst.orientations, dtype=np.float64)
    expected = transfer_orientation(h_src_to_dst, src.keypoints[:, :2], np.asarray(src.orientations))
    err = angle_difference(expected[c[:, 1]], ori_dst[c[:, 0]])
    same_src, same_dst = _same_point(src.keypoints), _same_point(dst.keypoints)
    if same_src is None and same_dst is None:
        return err
    for n, (j, i) in enumerate(c):
        si = same_src[i] if same_src is not None else [i]
        dj = same_dst[j] if same_dst is not None else [j]
        err[n] = angle_difference(expected[si][:, None], ori_dst[dj][None, :]).min()
    return err


def selected_points(src: FeatureSet, dst: FeatureSet, case: RotationCase, cfg: BenchConfig
                    ) -> Tuple[FeatureSet, FeatureSet, np.ndarray, np.ndarray]:
    """The main benchmark's selection for one case: the features of both images in the common
    region, the ``cfg.top_k`` best of each, and their keypoints in one frame (the source's
    with ``cfg.dst_to_src``): ``(src kept, dst kept, src points, dst points)``."""
    h_d2s = case.h_dst_to_src
    mask_src, mask_dst = common_region_masks(h_d2s, case.shape_src, case.shape_dst, border=cfg.border,
                                             threshold=cfg.mask_threshold)
    s, d = _select(src, mask_src, cfg.top_k), _select(dst, mask_dst, cfg.top_k)
    if cfg.dst_to_src:
        return s, d, s.keypoints, warp_points(d.keypoints, h_d2s)
    return s, d, warp_points(s.keypoints, case.h_src_to_dst), d.keypoints


def matched_errors(s: FeatureSet, d: FeatureSet, p_src: np.ndarray, p_dst: np.ndarray, distance: str = "l2"
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Mutual nearest-neighbour matches ``(K, 2)`` of the selected features and each match's
    error (px) under the ground truth (``p_src``/``p_dst`` from :func:`selected_points`)."""
    matches = mutual_nearest_neighbours(s.descriptors, d.descriptors, distance)
    return matches, match_distances(p_src, p_dst, matches)


def pair_metrics(src: FeatureSet, dst: FeatureSet, case: RotationCase, cfg: Optional[BenchConfig] = None,
                 distance: str = "l2") -> Dict[str, float]:
    """Metrics of one case for one method.

    As the main benchmark (:func:`HSequences_bench.evaluate.evaluate_pair`): points in the
    common region, the ``cfg.top_k`` best, destination points mapped to the source frame,
    ``rep_single`` / ``rep_multi`` (%), mutual nearest-neighbour matches; ``mma@t`` (D2-Net:
    correct / mutual matches) and ``ms@t`` (correct / min(N_src, N_dst)) for ``t`` in
    ``cfg.thresholds``. Extras: ``ori_err`` / ``ori_err_median`` (degrees; NaN for a method
    without orientations or without repeated points) over the scale-and-location
    correspondences, ``ori_points`` (how many), ``num_kpts`` (destination points returned
    by the method) and ``num_features`` (min(N_src, N_dst) after the selection).
    """
    cfg = cfg or default_config()
    src = FeatureSet(*src)
    dst = FeatureSet(*dst)
    rec: Dict[str, float] = {"num_kpts": float(len(dst.keypoints)), "num_kpts_src": float(len(src.keypoints))}
    s, d, p_src, p_dst = selected_points(src, dst, case, cfg)
    rep = compute_repeatability(p_src, p_dst, overlap=cfg.overlap, radius=cfg.radius,
                                dist_match_thresh=cfg.pixel_threshold, max_distance=cfg.max_distance)
    total = int(rep["total_num_points"])
    rec.update({"rep_single": float(rep["rep_single_scale"]), "rep_multi": float(rep["rep_multi_scale"]),
                "num_features": float(total)})

    err = orientation_errors(s, d, rep["correspondences_m"], case.h_src_to_dst)
    has_ori = s.orientations is not None and d.orientations is not None
    rec["ori_err"] = float(err.mean()) if err.size else float("nan")
    rec["ori_err_median"] = float(np.median(err)) if err.size else float("nan")
    rec["ori_points"] = float(err.size) if has_ori else float("nan")

    matches, dist = matched_errors(s, d, p_src, p_dst, distance)
    for t, prec in zip(cfg.thresholds, mma_precision(dist, cfg.thresholds)):
        rec[f"mma@{t}"] = float(prec)
        rec[f"ms@{t}"] = matching_scores(dist, total, rep["possible_matches"], t)["match_score"]
    rec["num_mutual"] = float(len(matches))
    return rec


# --------------------------------------------------------------------------------- runs
#: Gives the features of a method on an image (e.g. :class:`~HSequences_bench.rotation_cache.FeatureStore`).
FeatureSource = Callable[[Method, ImageRef], FeatureSet]


def direct_features(method: Method, ref: ImageRef) -> FeatureSet:
    """A :data:`FeatureSource` without cache: read, rotate, extract."""
    return FeatureSet(*method.extract(load_image(ref)))


def evaluate_cases(cases: Sequence[RotationCase], methods: Sequence[Method], features: FeatureSource = direct_features,
                   cfg: Optional[BenchConfig] = None, progress: bool = False, desc: str = "rotation"
                   ) -> List[Dict[str, object]]:
    """One record per (case, method): the case's identity and :func:`pair_metrics`."""
    cfg = cfg or default_config()
    records: List[Dict[str, object]] = []
    for case in tqdm(cases, desc=desc, unit="pair", disable=not progress, dynamic_ncols=True):
        for m in methods:
            rec: Dict[str, object] = {"protocol": case.protocol, "method": m.name, "sequence": case.sequence,
                                      "image": case.image, "angle": case.angle}
            rec.update(pair_metrics(features(m, case.src), features(m, case.dst), case, cfg, m.distance))
            records.append(rec)
    return records
