"""Descriptor matching with kornia's matchers, and the feature / match stages of an image
collection (features.h5 and matches.h5 in hloc's layout, resumable).

Matchers (``method``; ``threshold`` means, and defaults to):

========= ============================================== =========================== =========
method    kornia function                                threshold                   default
========= ============================================== =========================== =========
smnn      ``match_smnn``: mutual NN + ratio test both    max. ratio nearest/second   0.9
          ways
snn       ``match_snn``: Lowe's ratio test (one way)     max. ratio nearest/second   0.8
mnn       ``match_mnn``: mutual nearest neighbours       max. L2 distance (None: no  None
                                                         limit)
nn        ``match_nn``: nearest neighbour                max. L2 distance            None
adalam    ``match_adalam``: AdaLAM (local affine         AdaLAM's ``min_confidence`` 200
          verification), LAFs from our keypoints'
          positions and scales
========= ============================================== =========================== =========

The default, ``smnn`` at 0.9, keeps a match only when the two descriptors are each other's
nearest neighbour *and* clearly better than the second neighbour in both directions: the
mutual check alone (``mnn``) lets through the look-alike matches of repeated structure
(precision 0.69 on HSequences), a ratio of 0.8 keeps 16% fewer correct matches than 0.9
for 5 points more precision, 0.95 drops precision to 0.82 (the measurement is in the
README's matching section; the inliers are then found by RANSAC, which needs matches
right but not spotless). ``adalam`` verifies matches by local affine consistency; its
local RANSACs need enough keypoints (thousands) to find seeds.

Every matcher returns ``(matches, scores)``: (K, 2) int64 index pairs (image 0, image 1)
and (K,) float32 scores, the cosine similarity of the matched descriptors (the dot product
of L2-normalised descriptors, higher is better: what hloc's nearest-neighbour matcher
stores in ``matching_scores0``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import kornia.feature as KF
import numpy as np
import torch
from tqdm import tqdm

from hardnet.patches import DEFAULT_MAGNIFICATION, PATCH_SIZE
from kpcore.cli import add_bool_flag, add_device_arg
from kpcore.images import read_image_grey

from . import hloc_io
from .detection import RIGHT_ANGLE_TURNS
from .extract import Extractor, load_descriptor, load_detector, load_orientation
from .options import DEFAULT_ROTATION_TURNS, add_rotation_turns_arg, add_weights_args
from .pairs import Pair

PathLike = Union[str, os.PathLike]

MATCHERS = ("smnn", "snn", "mnn", "nn", "adalam")
DEFAULT_MATCHER = "smnn"
DEFAULT_THRESHOLDS: Dict[str, Optional[float]] = {"smnn": 0.9, "snn": 0.8, "mnn": None, "nn": None, "adalam": 200.0}
#: The region a HardNet descriptor describes has half-width magnification * 16 * scale
#: px (32 * scale by default): the LAF radius given to AdaLAM.
LAF_RADIUS_PER_SCALE = DEFAULT_MAGNIFICATION * PATCH_SIZE / 2.0
#: AdaLAM's own default (degrees): with oriented features, a match whose change of orientation
#: differs more than this from its seed's is rejected. Upright features disable the check.
ADALAM_ORIENTATION_TOLERANCE = 30.0


class MatchingError(RuntimeError):
    """The feature or matching stage cannot proceed (message names the culprit)."""


@dataclass
class MatcherConfig:
    """Descriptor matcher: ``method`` (one of :data:`MATCHERS`) and its ``threshold``
    (``None``: the method's default, :data:`DEFAULT_THRESHOLDS`)."""

    method: str = DEFAULT_MATCHER
    threshold: Optional[float] = None

    def __post_init__(self) -> None:
        if self.method not in MATCHERS:
            raise ValueError(f"unknown matcher {self.method!r}; choose one of {', '.join(MATCHERS)}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"the matcher threshold must be > 0, got {self.threshold}")

    @property
    def resolved_threshold(self) -> Optional[float]:
        return DEFAULT_THRESHOLDS[self.method] if self.threshold is None else float(self.threshold)


def lafs_from_keypoints(kpts: np.ndarray, orientations: Optional[np.ndarray] = None) -> torch.Tensor:
    """(1, N, 2, 3) LAFs from (N, >=3) x, y, scale keypoints: centre (x, y), radius
    :data:`LAF_RADIUS_PER_SCALE` * scale (the region HardNet describes); upright, or turned by
    ``orientations`` ((N,) degrees, the project's convention; kornia's LAF angle is its negative)."""
    k = torch.as_tensor(np.asarray(kpts, dtype=np.float32))
    scale = k[:, 2] * LAF_RADIUS_PER_SCALE if k.shape[1] >= 3 else torch.ones(len(k))
    ori = torch.zeros(1, len(k), 1) if orientations is None else \
        -torch.as_tensor(np.asarray(orientations, dtype=np.float32)).reshape(1, len(k), 1)
    return KF.laf_from_center_scale_ori(k[None, :, :2], scale[None, :, None, None], ori)


def _tensor(d: np.ndarray, name: str) -> torch.Tensor:
    a = np.asarray(d, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, config: Optional[MatcherConfig] = None,
                      kpts0: Optional[np.ndarray] = None, kpts1: Optional[np.ndarray] = None,
                      hw0: Optional[Sequence[int]] = None, hw1: Optional[Sequence[int]] = None,
                      ori0: Optional[np.ndarray] = None, ori1: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Match two descriptor sets (N0, D) and (N1, D).

    ``kpts0``/``kpts1`` ((N, >=3) x, y, scale) and the image sizes ``hw0``/``hw1``
    (rows, cols) are needed by ``adalam`` only; with the keypoint orientations ``ori0``/``ori1``
    ((N,) degrees, oriented features) AdaLAM also checks that a match turns its region as its
    neighbours do (its default tolerance, :data:`ADALAM_ORIENTATION_TOLERANCE`). Returns
    ``(matches (K, 2) int64, scores (K,) float32 cosine similarities)``, sorted by the index in image 0.
    """
    cfg = config or MatcherConfig()
    d0, d1 = _tensor(desc0, "desc0"), _tensor(desc1, "desc1")
    if d0.shape[1] != d1.shape[1]:
        raise ValueError(f"descriptor sizes differ: {d0.shape[1]} and {d1.shape[1]}")
    empty = (np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if len(d0) == 0 or len(d1) == 0:
        return empty
    th = cfg.resolved_threshold
    with torch.no_grad():
        if cfg.method == "adalam":
            if kpts0 is None or kpts1 is None:
                raise ValueError("the adalam matcher needs the keypoints (x, y, scale) of both images")
            if len(d0) < 2 or len(d1) < 2:
                return empty
            oriented = ori0 is not None and ori1 is not None
            conf = {"min_confidence": th, "device": d0.device,
                    "orientation_difference_threshold": ADALAM_ORIENTATION_TOLERANCE if oriented else None}
            _, idx = KF.match_adalam(d0, d1, lafs_from_keypoints(kpts0, ori0 if oriented else None),
                                     lafs_from_keypoints(kpts1, ori1 if oriented else None),
                                     config=conf, hw1=hw0, hw2=hw1)
        elif cfg.method in ("smnn", "snn"):
            fn = KF.match_smnn if cfg.method == "smnn" else KF.match_snn
            _, idx = fn(d0, d1, th)
        else:
            fn = KF.match_mnn if cfg.method == "mnn" else KF.match_nn
            dist, idx = fn(d0, d1)
            if th is not None:
                idx = idx[dist[:, 0] <= th]
    m = idx.cpu().numpy().astype(np.int64).reshape(-1, 2)
    m = m[np.argsort(m[:, 0], kind="stable")]
    scores = np.einsum("ij,ij->i", d0.numpy()[m[:, 0]], d1.numpy()[m[:, 1]]).astype(np.float32)
    return m, scores


# ----------------------------------------------------------------------------- features stage
@dataclass
class FeatureConfig:
    """How features are extracted for matching / reconstruction.

    ``detector``/``descriptor``: weights (``'default'``: the shipped Key.Net / HardNet);
    ``num_points``: keypoints per image; ``max_image_size``: longest image side (px) the
    features are computed at (larger images are downscaled with area averaging and the
    keypoints mapped back to full resolution; 0 = never downscale); ``nms_size``: the
    detector's NMS window; ``subpixel``: :class:`keynet.subpixel.SubpixelKeyNetDetector`
    (sub-pixel maxima, exact level mapping); ``orientation``: ``'none'`` (upright patches),
    ``'learned'`` (shipped OriNet), ``'gradient'`` or an OriNet weights file: patches are cut
    rotated by each keypoint's orientation, stored as ``orientations`` in ``features.h5``, and
    the detector averages its score maps over ``rotation_turns`` evenly spaced turns
    (``DetectorSettings.rotation_average``, ``rotation_average_turns``);
    ``device``: torch device (auto when ``None``).
    """

    detector: str = "default"
    descriptor: str = "default"
    orientation: str = "none"
    num_points: int = 8000
    max_image_size: int = 1600
    nms_size: int = 15
    subpixel: bool = True
    rotation_turns: int = DEFAULT_ROTATION_TURNS
    device: Optional[str] = field(default=None, compare=False)

    def fingerprint(self) -> str:
        d = asdict(self)
        d.pop("device")
        if d["orientation"] == "none" or d["rotation_turns"] == RIGHT_ANGLE_TURNS:
            d.pop("rotation_turns")  # unused, or the setting of caches made before it was an option
        for k in ("detector", "descriptor", "orientation"):
            if d[k] not in ("default", "none", "learned", "gradient"):
                d[k] = str(Path(d[k]).resolve())
        return json.dumps(d, sort_keys=True)


def build_extractor(cfg: FeatureConfig) -> Extractor:
    """Key.Net + HardNet per ``cfg`` (:class:`MatchingError` without descriptor weights)."""
    det = load_detector(cfg.detector, device=cfg.device, num_points=cfg.num_points, nms_size=cfg.nms_size,
                        rotation_average=cfg.orientation != "none", rotation_average_turns=cfg.rotation_turns,
                        subpixel=cfg.subpixel)
    desc = load_descriptor(cfg.descriptor, device=cfg.device)
    if desc is None:
        raise MatchingError(f"no HardNet weights ({cfg.descriptor!r}): matching needs descriptors; "
                            "pass a HardNet weights file")
    return Extractor(det, desc, load_orientation(cfg.orientation, device=cfg.device))


def read_for_extraction(path: PathLike, max_image_size: int) -> Tuple[np.ndarray, Tuple[float, float], Tuple[int, int]]:
    """Grey image (official conversion), downscaled by area averaging so that its longest
    side is at most ``max_image_size`` (0: unchanged). Returns ``(image, (sx, sy),
    (width, height) of the original)``; full-resolution pixel = (small + 0.5) * s - 0.5."""
    img = read_image_grey(path)
    h, w = img.shape[:2]
    if max_image_size and max(h, w) > max_image_size:
        f = max_image_size / float(max(h, w))
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        return img, (w / nw, h / nh), (w, h)
    return img, (1.0, 1.0), (w, h)


def extract_image(extractor: Extractor, path: PathLike, max_image_size: int
                  ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], Optional[np.ndarray]]:
    """Keypoints (N, 4) x, y, scale, score in full-resolution pixels (integer pixel
    centres), descriptors (N, D), the (width, height) of one image file and the keypoint
    orientations (N,) in degrees (None for upright features)."""
    img, (sx, sy), size = read_for_extraction(path, max_image_size)
    f = extractor.features(img)
    kpts, desc = f.keypoints, f.descriptors
    kpts = np.array(kpts, dtype=np.float64, copy=True)
    if (sx, sy) != (1.0, 1.0):
        kpts[:, 0] = (kpts[:, 0] + 0.5) * sx - 0.5
        kpts[:, 1] = (kpts[:, 1] + 0.5) * sy - 0.5
        kpts[:, 2] *= 0.5 * (sx + sy)
    return kpts, desc, size, f.orientations


@dataclass
class StageSummary:
    """What a features / matches stage did."""

    done: List[str] = field(default_factory=list)
    reused: List[str] = field(default_factory=list)
    seconds: float = 0.0


def extract_features(image_dir: PathLike, names: Sequence[str], features_path: PathLike, cfg: FeatureConfig,
                     extractor: Optional[Extractor] = None, overwrite: bool = False,
                     progress: bool = True) -> StageSummary:
    """Features of every image ``image_dir/name`` into ``features_path`` (hloc layout).

    Resumable: images already in the file with the same :class:`FeatureConfig` are reused
    (each image's group is flushed as soon as it is written; a group left incomplete by an
    interruption is recomputed). A file written with other settings is started again.
    Raises :class:`kpcore.images.ImageReadError` naming an unreadable image.
    """
    t0 = time.time()
    summary = StageSummary()
    fp = cfg.fingerprint()
    with hloc_io.open_h5(features_path, "a") as fd:
        if overwrite or fd.attrs.get("extractor", fp) != fp:
            for k in list(fd.keys()):
                del fd[k]
        fd.attrs["extractor"] = fp
        have = set(hloc_io.complete_names(fd))
        todo = [n for n in names if n not in have]
        summary.reused = [n for n in names if n in have]
        if todo and extractor is None:
            extractor = build_extractor(cfg)
        bar = tqdm(todo, desc="features", unit="img", disable=not progress or not todo)
        for name in bar:
            kpts, desc, size, ori = extract_image(extractor, Path(image_dir) / name, cfg.max_image_size)
            hloc_io.write_features(fd, name, kpts, desc, size, orientations=ori)
            fd.flush()
            summary.done.append(name)
            bar.set_postfix(points=len(kpts))
    summary.seconds = time.time() - t0
    return summary


def match_pairs(pairs: Sequence[Pair], features_path: PathLike, matches_path: PathLike,
                config: Optional[MatcherConfig] = None, overwrite: bool = False, progress: bool = True,
                export_dir: Optional[PathLike] = None) -> StageSummary:
    """Match every pair with the features of ``features_path`` into ``matches_path``
    (hloc layout). Pairs already matched with the same matcher on the same features are
    reused. With ``export_dir``, each pair is also written as
    ``<export_dir>/<name0>__<name1>.npz`` (``/`` in names -> ``-``): ``matches`` (K, 2),
    ``scores`` (K,), ``keypoints0``/``keypoints1`` (K, 2) matched pixel coordinates."""
    cfg = config or MatcherConfig()
    t0 = time.time()
    summary = StageSummary()
    with hloc_io.open_h5(features_path, "r") as ff:
        fp = {"matcher": cfg.method, "threshold": cfg.resolved_threshold,
              "features": str(ff.attrs.get("extractor", ""))}
        if cfg.method == "adalam":  # AdaLAM checks the orientations of oriented features (since v2)
            fp["adalam"] = 2
        fp = json.dumps(fp, sort_keys=True)
        cache: Dict[str, Dict[str, np.ndarray]] = {}

        def feats(name: str) -> Dict[str, np.ndarray]:
            if name not in cache:
                try:
                    cache[name] = hloc_io.read_features(ff, name)
                except KeyError:
                    raise MatchingError(f"no features for image {name} in {features_path}") from None
                if "descriptors" not in cache[name]:
                    raise MatchingError(f"no descriptors for image {name} in {features_path}")
            return cache[name]

        with hloc_io.open_h5(matches_path, "a") as fm:
            if overwrite or fm.attrs.get("matcher", fp) != fp:
                for k in list(fm.keys()):
                    del fm[k]
            fm.attrs["matcher"] = fp
            bar = tqdm(pairs, desc=f"match ({cfg.method})", unit="pair", disable=not progress)
            for a, b in bar:
                key = f"{a} {b}"
                if hloc_io.has_matches(fm, a, b) and export_dir is None:
                    summary.reused.append(key)
                    continue
                fa, fb = feats(a), feats(b)
                if hloc_io.has_matches(fm, a, b):
                    m, s = hloc_io.read_matches(fm, a, b)
                    summary.reused.append(key)
                else:
                    ka = _with_scales(fa)
                    kb = _with_scales(fb)
                    m, s = match_descriptors(fa["descriptors"], fb["descriptors"], cfg, ka, kb,
                                             fa["image_size"][::-1], fb["image_size"][::-1],
                                             fa.get("orientations"), fb.get("orientations"))
                    hloc_io.write_matches(fm, a, b, m, s, len(fa["keypoints"]))
                    summary.done.append(key)
                    bar.set_postfix(matches=len(m))
                if export_dir is not None:
                    out = Path(export_dir) / (hloc_io.names_to_pair(a, b, "__") + ".npz")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(out, matches=m, scores=s, keypoints0=fa["keypoints"][m[:, 0]],
                             keypoints1=fb["keypoints"][m[:, 1]])
            cache.clear()
    summary.seconds = time.time() - t0
    return summary


def _with_scales(f: Dict[str, np.ndarray]) -> np.ndarray:
    k = f["keypoints"]
    s = f.get("scales", np.ones(len(k)))
    return np.column_stack([k, s])


def match_images(image0: PathLike, image1: PathLike, extractor: Optional[Extractor] = None,
                 feature_config: Optional[FeatureConfig] = None, matcher: Optional[MatcherConfig] = None
                 ) -> Dict[str, np.ndarray]:
    """Two image files -> ``{'kpts0', 'kpts1' (N, 4), 'matches' (K, 2), 'scores' (K,),
    'size0', 'size1' (width, height)}`` (the Python API behind ``match_demo.py``)."""
    fcfg = feature_config or FeatureConfig()
    ex = extractor or build_extractor(fcfg)
    k0, d0, s0, o0 = extract_image(ex, image0, fcfg.max_image_size)
    k1, d1, s1, o1 = extract_image(ex, image1, fcfg.max_image_size)
    m, sc = match_descriptors(d0, d1, matcher, k0, k1, (s0[1], s0[0]), (s1[1], s1[0]), o0, o1)
    return {"kpts0": k0, "kpts1": k1, "matches": m, "scores": sc, "size0": np.array(s0), "size1": np.array(s1)}


# ----------------------------------------------------------------------------- command line
def _optional_float(v: str) -> Optional[float]:
    return None if str(v).lower() in ("", "none", "default") else float(v)


def add_feature_args(p: argparse.ArgumentParser, defaults: Optional[FeatureConfig] = None) -> None:
    """Options of :class:`FeatureConfig` (shared by the matching / reconstruction scripts)."""
    d = defaults or FeatureConfig()
    g = p.add_argument_group("features (Key.Net + HardNet)")
    add_weights_args(g, d.detector, d.descriptor)
    g.add_argument("--num-points", type=int, default=d.num_points, help="keypoints per image")
    g.add_argument("--max-image-size", type=int, default=d.max_image_size,
                   help="longest side (px) features are computed at; larger images are downscaled and the "
                        "keypoints mapped back to full resolution; 0 = full resolution")
    g.add_argument("--nms-size", type=int, default=d.nms_size, help="non-maximum-suppression window (px)")
    add_bool_flag(g, "--subpixel", d.subpixel,
                  "sub-pixel score maxima and exact pyramid-level mapping (false: the official extraction)")
    add_bool_flag(g, "--upright", d.orientation == "none",
                  "upright descriptor patches (false: rotated by each keypoint's --orientation)")
    g.add_argument("--orientation", default=d.orientation if d.orientation != "none" else "learned",
                   help="orientation estimator when --upright false: 'learned' (shipped OriNet), 'gradient' "
                        "(dominant gradient) or an OriNet weights file")
    add_rotation_turns_arg(g, d.rotation_turns)
    add_device_arg(g, d.device or "auto")


def feature_config_from_args(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(detector=args.detector, descriptor=args.descriptor, num_points=args.num_points,
                         max_image_size=args.max_image_size, nms_size=args.nms_size, subpixel=args.subpixel,
                         orientation="none" if args.upright else args.orientation,
                         rotation_turns=args.rotation_turns, device=args.device)


def add_matcher_args(p: argparse.ArgumentParser, defaults: Optional[MatcherConfig] = None) -> None:
    """Options of :class:`MatcherConfig`."""
    d = defaults or MatcherConfig()
    g = p.add_argument_group("matching")
    g.add_argument("--matcher", choices=MATCHERS, default=d.method,
                   help="smnn: mutual NN + ratio test; snn: ratio test; mnn: mutual NN; nn: nearest neighbour; "
                        "adalam: AdaLAM")
    g.add_argument("--match-threshold", type=_optional_float, default=d.threshold,
                   help="ratio (smnn 0.9, snn 0.8), max. distance (mnn, nn: none) or AdaLAM min. confidence "
                        "(200); default: the matcher's")


def matcher_config_from_args(args: argparse.Namespace) -> MatcherConfig:
    return MatcherConfig(method=args.matcher, threshold=args.match_threshold)


__all__ = [
    "DEFAULT_MATCHER", "DEFAULT_THRESHOLDS", "FeatureConfig", "MATCHERS", "MatcherConfig", "MatchingError",
    "StageSummary", "add_feature_args", "add_matcher_args", "build_extractor", "feature_config_from_args",
    "matcher_config_from_args", "extract_features", "extract_image", "lafs_from_keypoints",
    "match_descriptors", "match_images", "match_pairs", "read_for_extraction",
]
