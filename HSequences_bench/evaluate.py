"""The HSequences evaluation of one detector: per pair, then over a split.

Per pair (image 1 -> image k), following the official Key.Net script:
common-region masks -> keep points inside -> top-k by score -> map destination points
to the source frame (or source to destination) -> repeatability -> mutual-NN matching
metrics; plus the extra metrics (D2-Net MMA, homography accuracy), kept apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from HSequences_bench.features import (
    FeatureFileError,
    extraction_hint,
    feature_layout,
    load_descriptors,
    load_keypoints,
    pair_feature_paths,
)
from HSequences_bench.homography import corner_error, estimate_homography
from HSequences_bench.hsequences import (
    DEFAULT_PREFIX,
    ImagePair,
    check_sequences,
    sequence_indices,
    sequence_pairs,
    split_kind,
    unpaired_images,
)
from HSequences_bench.matching import (
    THRESHOLDS,
    match_distances,
    matching_scores,
    mma_precision,
    mutual_nearest_neighbours,
)
from HSequences_bench.repeatability import compute_repeatability
from keynet.base.geometry import common_region_masks, points_in_mask, warp_points

PathLike = Union[str, os.PathLike]

#: Per-pair lists of the official results pickle, in the official order.
OFFICIAL_KEYS = ("num_features", "rep_single_scale", "rep_multi_scale", "num_points_single_scale",
                 "num_points_multi_scale", "error_overlap_single_scale", "error_overlap_multi_scale",
                 "match_score", "match_score_corr", "num_matches", "num_mutual_corresp", "MMA")
#: The official script's own names for three of them (``mma`` is the matching score at the
#: pixel threshold, ``mma_corr`` the same over possible matches, ``avg_mma`` the matching
#: score averaged over 1..10 px): the pickle carries both names, so scripts written for the
#: original pickles keep working.
ORIGINAL_NAMES = {"mma": "match_score", "mma_corr": "match_score_corr", "avg_mma": "MMA"}


@dataclass
class BenchConfig:
    """Benchmark options (defaults = the official script)."""
    top_k: Optional[int] = 1000          # None or 0: all points
    overlap: float = 0.6
    pixel_threshold: float = 5.0
    dst_to_src: bool = True
    order_coord: str = "xysr"
    radius: float = 30.0
    max_distance: float = 120.0
    border: int = 15
    mask_threshold: float = 0.75
    distance: str = "l2"
    ransac_threshold: float = 3.0
    drop_duplicates: bool = False        # official: keep duplicated keypoints
    thresholds: Sequence[int] = field(default_factory=lambda: THRESHOLDS)


def _top_k(points: np.ndarray, k: Optional[int]) -> np.ndarray:
    """Indices of the k best scores (official: ``argsort(-score)[:k]``, default sort kind,
    on the file's dtype so that ties are ordered as in the official code)."""
    if not k:
        return np.arange(points.shape[0])
    return np.argsort(-1 * points[:, 3])[:k]


def _dedup(points: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct (x, y, scale), in file order."""
    _, first = np.unique(points[:, :3], axis=0, return_index=True)
    return np.sort(first)


def evaluate_pair(src_kpts: np.ndarray, dst_kpts: np.ndarray, pair: ImagePair, cfg: BenchConfig,
                  src_dsc: Optional[np.ndarray] = None, dst_dsc: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Metrics of one pair. ``*_kpts``: ``(N, 4)`` x, y, scale, score (file order and
    dtype); ``*_dsc``: matching descriptor rows, or None for a detector without
    descriptors (matching metrics are then NaN). Returns a flat dict (official keys,
    ``ms@t``/``mma@t`` per threshold, ``h_error``, counts of dropped points)."""
    rec: Dict[str, object] = {"sequence": pair.sequence, "kind": split_kind(pair.sequence), "pair": pair.k,
                              "n_src_file": int(src_kpts.shape[0]), "n_dst_file": int(dst_kpts.shape[0])}
    has_dsc = src_dsc is not None and dst_dsc is not None
    if cfg.drop_duplicates:
        i, j = _dedup(src_kpts), _dedup(dst_kpts)
        src_kpts, dst_kpts = src_kpts[i], dst_kpts[j]
        if has_dsc:
            src_dsc, dst_dsc = src_dsc[i], dst_dsc[j]

    mask_src, mask_dst = common_region_masks(pair.h_dst_to_src, pair.shape_src, pair.shape_dst,
                                             border=cfg.border, threshold=cfg.mask_threshold)
    in_src, out_src = points_in_mask(src_kpts[:, :2], mask_src)
    in_dst, out_dst = points_in_mask(dst_kpts[:, :2], mask_dst)
    rec["n_src_outside_image"], rec["n_dst_outside_image"] = int(out_src.sum()), int(out_dst.sum())
    src_kpts, dst_kpts = src_kpts[in_src], dst_kpts[in_dst]
    if has_dsc:
        src_dsc, dst_dsc = src_dsc[in_src], dst_dsc[in_dst]

    i, j = _top_k(src_kpts, cfg.top_k), _top_k(dst_kpts, cfg.top_k)
    src = np.asarray(src_kpts[i], dtype=np.float64)
    dst = np.asarray(dst_kpts[j], dtype=np.float64)
    if has_dsc:
        src_dsc, dst_dsc = src_dsc[i], dst_dsc[j]
    rec["n_src"], rec["n_dst"] = int(src.shape[0]), int(dst.shape[0])

    if cfg.dst_to_src:
        p_src, p_dst = src, warp_points(dst, pair.h_dst_to_src)
    else:
        p_src, p_dst = warp_points(src, pair.h_src_to_dst), dst
    rep = compute_repeatability(p_src, p_dst, overlap=cfg.overlap, radius=cfg.radius,
                                dist_match_thresh=cfg.pixel_threshold, max_distance=cfg.max_distance)
    for key in ("rep_single_scale", "rep_multi_scale", "num_points_single_scale", "num_points_multi_scale",
                "error_overlap_single_scale", "error_overlap_multi_scale", "possible_matches"):
        rec[key] = rep[key]
    total = int(rep["total_num_points"])
    rec["num_features"] = total

    nan = float("nan")
    if not has_dsc:
        for key in ("match_score", "match_score_corr", "num_matches", "num_mutual_corresp", "MMA", "h_error"):
            rec[key] = nan
        for t in cfg.thresholds:
            rec[f"ms@{t}"] = nan
            rec[f"mma@{t}"] = nan
        return rec

    matches = mutual_nearest_neighbours(src_dsc, dst_dsc, cfg.distance)
    dist = match_distances(p_src, p_dst, matches)
    at = matching_scores(dist, total, rep["possible_matches"], cfg.pixel_threshold)
    rec.update(at)
    rec["num_mutual_corresp"] = int(matches.shape[0])
    per_t = [matching_scores(dist, total, rep["possible_matches"], t)["match_score"] for t in cfg.thresholds]
    rec["MMA"] = float(np.mean(per_t))
    prec = mma_precision(dist, cfg.thresholds)
    for t, ms, pr in zip(cfg.thresholds, per_t, prec):
        rec[f"ms@{t}"] = ms
        rec[f"mma@{t}"] = float(pr)
    h_est = estimate_homography(src[matches[:, 0], :2], dst[matches[:, 1], :2], cfg.ransac_threshold)
    rec["h_error"] = corner_error(h_est, pair.h_src_to_dst, pair.shape_src)
    return rec


@dataclass
class DetectorRun:
    """All per-pair records of one detector on one split, and what was skipped."""
    detector: str
    split: str
    records: List[Dict[str, object]]
    missing_sequences: Dict[str, List[str]]
    has_descriptors: bool
    duplicates: int = 0
    #: sequence -> its images ``k.ppm`` without a homography ``H_1_k`` (not evaluated)
    unpaired: Dict[str, List[int]] = field(default_factory=dict)


def _descriptor_mode(results_dir: PathLike, detector: str, sequences: Sequence[str], prefix: str,
                     data_dir: PathLike) -> bool:
    """True when the detector has descriptor files, False when it has none at all.
    A partial set is an error naming the first missing file."""
    paths = [pair_feature_paths(results_dir, detector, s, k, prefix)[1] for s in sequences
             for k in sequence_indices(data_dir, s)]
    exist = [p.is_file() for p in paths]
    if all(exist):
        return True
    if not any(exist):
        return False
    first = paths[exist.index(False)]
    raise FeatureFileError(f"missing descriptor file: {first} ({exist.count(False)} of {len(paths)} missing; "
                           f"the detector has descriptors for other images)")


def evaluate_detector(detector: str, sequences: Sequence[str], data_dir: PathLike, results_dir: PathLike,
                      cfg: BenchConfig, split: str = "", allow_missing: bool = False,
                      prefix: str = DEFAULT_PREFIX, descriptors: Optional[bool] = None,
                      progress: Optional[Callable[[str], None]] = None) -> DetectorRun:
    """Evaluate ``detector`` on ``sequences`` of ``data_dir``, reading its features from
    ``results_dir``. ``descriptors``: None = auto (repeatability only when the detector
    has no descriptor file at all), True = required, False = ignore them. ``prefix``: the
    folder between ``<results_dir>/<detector>/`` and ``<sequence>/`` in the feature layout
    (``''``: none, the layout of ``keynet extract --image-dir <data_dir>``; ``'auto'``: the
    layout holding the features, :func:`~HSequences_bench.features.feature_layout`). Each
    sequence gives the pairs (1, k) of its images with a homography ``H_1_k`` (HPatches: the
    official five; :func:`~HSequences_bench.hsequences.sequence_indices`)."""
    present, missing = check_sequences(data_dir, sequences, allow_missing=allow_missing)
    prefix = feature_layout(results_dir, detector, present, prefix, data_dir)
    if descriptors is None:
        descriptors = _descriptor_mode(results_dir, detector, present, prefix, data_dir)
    hint = extraction_hint(detector, results_dir, data_dir, prefix)
    records, dups = [], 0
    for seq in present:
        if progress:
            progress(seq)
        kp_path, ds_path = pair_feature_paths(results_dir, detector, seq, 1, prefix)
        src = load_keypoints(kp_path, cfg.order_coord, hint)
        src_dsc = load_descriptors(ds_path, src.points.shape[0]) if descriptors else None
        dups += src.duplicates
        for pair in sequence_pairs(data_dir, seq):
            kp_path, ds_path = pair_feature_paths(results_dir, detector, seq, pair.k, prefix)
            dst = load_keypoints(kp_path, cfg.order_coord, hint)
            dst_dsc = load_descriptors(ds_path, dst.points.shape[0]) if descriptors else None
            dups += dst.duplicates
            rec = evaluate_pair(src.points, dst.points, pair, cfg, src_dsc, dst_dsc)
            rec["dup_src"], rec["dup_dst"] = src.duplicates, dst.duplicates
            records.append(rec)
    unpaired = {s: ks for s in present for ks in [unpaired_images(data_dir, s)] if ks}
    return DetectorRun(detector, split, records, missing, bool(descriptors), dups, unpaired)


def official_results(run: DetectorRun, cfg: BenchConfig) -> Dict[str, object]:
    """The results pickle of the official script: per-pair lists under the official keys,
    plus 'detector' and 'overlap'; our extra per-pair data under extra keys."""
    res: Dict[str, object] = {k: [r[k] for r in run.records] for k in OFFICIAL_KEYS}
    for original, ours in ORIGINAL_NAMES.items():
        res[original] = list(res[ours])
    res["detector"] = run.detector
    res["overlap"] = cfg.overlap
    for k in ("sequence", "pair", "h_error", "possible_matches", "n_src_outside_image", "n_dst_outside_image",
              "dup_src", "dup_dst"):
        res[k] = [r[k] for r in run.records]
    res["match_score_per_threshold"] = {t: [r[f"ms@{t}"] for r in run.records] for t in cfg.thresholds}
    res["mma_precision_per_threshold"] = {t: [r[f"mma@{t}"] for r in run.records] for t in cfg.thresholds}
    res["has_descriptors"] = run.has_descriptors
    return res
