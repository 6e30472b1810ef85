"""Patch pairs with real appearance change: frames of fixed webcams (day, dusk, night,
seasons, weather), composed with the random warps of :mod:`hardnet.data`.

A webcam folder holds frames of one static camera: a pixel is the same scene point in every
frame (the ground truth is the identity; moving cars, people and clouds break it locally).
For each frame ``i`` of a webcam and each of ``views_per_image`` draws, another frame ``j``
of the same webcam is drawn; view A is frame ``i``, view B is frame ``j`` warped by a random
homography (:func:`hardnet.data.sample_homography`), and the pairs are cut exactly as for
photos (:func:`hardnet.data.pairs_from_photo` with ``other``): keypoints detected in A,
mapped to B, both patches by the extraction code. So a pair carries the real change of
light between the two frames and a synthetic change of viewpoint.

Negatives: every pair of one webcam gets the same ``image`` id and its view-A position in
the camera's own pixel frame (view A is never warped), so the loss's same-point mask
(:func:`hardnet.loss.same_point_mask`) recognises the same scene point across frames and
draws: two frames of one webcam at the same pixel are the same point, not a negative.

Frames larger than ``max_pixels`` are shrunk (area, not side: the 2469 x 205 panorama strip
keeps its height). Frames of a webcam whose size differs from its first frame are skipped
with a warning.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from keynet.base import cache
from keynet.base.files import atomic_save_npy, list_images

from .data import ARRAY_KEYS, MANIFEST_VERSION, KeypointFn, PatchPairConfig, _Detector, pairs_from_photo
from .patches import PATCH_SIZE

log = logging.getLogger(__name__)

#: Frames above this many pixels are shrunk (1024 x 640).
MAX_PIXELS = 1024 * 640


class WebcamError(ValueError):
    """A webcam folder that cannot be used (missing, or fewer than two readable frames)."""


def load_frame(path: Path, max_pixels: int = MAX_PIXELS) -> Optional[np.ndarray]:
    """A frame as uint8 BGR, shrunk (INTER_AREA) to at most ``max_pixels``; None if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        log.warning("skipping unreadable frame %s", path)
        return None
    s = (max_pixels / float(bgr.shape[0] * bgr.shape[1])) ** 0.5
    if s < 1:
        bgr = cv2.resize(bgr, (round(bgr.shape[1] * s), round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return bgr


def webcam_frames(folder: Path, max_pixels: int = MAX_PIXELS) -> Tuple[List[Path], List[np.ndarray]]:
    """The readable frames of one webcam folder of the size of its first frame (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WebcamError(f"webcam folder not found: {folder}")
    paths, frames = [], []
    for p in list_images(folder):
        f = load_frame(p, max_pixels)
        if f is None:
            continue
        if frames and f.shape != frames[0].shape:
            log.warning("skipping %s: %dx%d, the webcam's first frame is %dx%d", p, f.shape[1], f.shape[0],
                        frames[0].shape[1], frames[0].shape[0])
            continue
        paths.append(p)
        frames.append(f)
    if len(frames) < 2:
        raise WebcamError(f"{folder}: a webcam needs at least 2 readable frames of one size, found {len(frames)}")
    return paths, frames


def webcam_pairs(folder: Path, cfg: PatchPairConfig, webcam_id: int, split_id: int,
                 detector, max_pixels: int = MAX_PIXELS) -> Dict[str, np.ndarray]:
    """The pairs of one webcam (arrays of :data:`hardnet.data.ARRAY_KEYS`, ``image`` = ``webcam_id``)."""
    _, frames = webcam_frames(folder, max_pixels)
    out: Dict[str, list] = {k: [] for k in ARRAY_KEYS}
    for i, frame in enumerate(frames):
        for v in range(cfg.views_per_image):
            rng = np.random.default_rng([cfg.seed, 500 + split_id, webcam_id, i, v])
            j = int(rng.integers(len(frames) - 1))
            j += j >= i  # another frame
            res = pairs_from_photo(frame, rng, cfg, detector, other=frames[j])
            if len(res["a"]) == 0:
                continue
            for k in ("a", "b", "kpt_a", "kpt_b", "angle"):
                out[k].append(res[k])
            out["image"].append(np.full(len(res["a"]), webcam_id, dtype=np.int32))
    return _concat(out)


def _concat(out: Dict[str, list]) -> Dict[str, np.ndarray]:
    p = PATCH_SIZE
    empty = {"a": np.zeros((0, p, p), np.uint8), "b": np.zeros((0, p, p), np.uint8),
             "image": np.zeros(0, np.int32), "kpt_a": np.zeros((0, 3), np.float32),
             "kpt_b": np.zeros((0, 3), np.float32), "angle": np.zeros(0, np.float32)}
    return {k: (np.concatenate(out[k]) if out[k] else empty[k]) for k in ARRAY_KEYS}


def prepare_webcam_pairs(train_dirs: Sequence[Path], val_dirs: Sequence[Path], out_dir, cfg: PatchPairConfig,
                         progress: bool = True, keypoint_fn: Optional[KeypointFn] = None,
                         max_pixels: int = MAX_PIXELS) -> Dict[str, int]:
    """Make (or reuse) the webcam pairs in ``out_dir`` in the layout of
    :func:`hardnet.data.prepare_patch_pairs` (``train_*.npy`` from ``train_dirs``, ``val_*.npy``
    from ``val_dirs``, ``manifest.json``); returns the pair counts per split.

    Each webcam is one ``image`` id (train and val ids are disjoint). The cache is reused when
    the parameters and the frame lists match."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    dirs = [Path(d) for d in (*train_dirs, *val_dirs)]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise WebcamError(f"webcam folder not found: {missing[0]}")
    files = [f.resolve() for d in dirs for f in list_images(d)]
    root = Path(*_common_root(dirs))
    params = {**dataclasses.asdict(cfg), "source": "webcam", "max_pixels": max_pixels,
              "train_webcams": [d.name for d in train_dirs], "val_webcams": [d.name for d in val_dirs]}
    want = cache.manifest_for(MANIFEST_VERSION, params, files, root)
    if cache.reuse_or_begin(out_dir, want, cache.split_arrays(ARRAY_KEYS), "webcam patch pairs"):
        return cache.read_manifest(out_dir)["counts"]
    detector = _Detector(cfg, keypoint_fn)
    counts, per_webcam = {}, {}
    for split, split_dirs, sid, offset in (("train", train_dirs, 0, 0), ("val", val_dirs, 1, len(train_dirs))):
        parts = []
        bar = tqdm(list(split_dirs), desc=f"{split} webcam pairs", unit="webcam", disable=not progress)
        for k, d in enumerate(bar):
            part = webcam_pairs(Path(d), cfg, offset + k, sid, detector, max_pixels)
            per_webcam[Path(d).name] = int(len(part["a"]))
            parts.append(part)
        arrays_ = _concat({key: [p[key] for p in parts] for key in ARRAY_KEYS})
        for key in ARRAY_KEYS:
            atomic_save_npy(out_dir / f"{split}_{key}.npy", arrays_[key])
        counts[split] = int(len(arrays_["a"]))
    want.update(counts=counts, per_webcam=per_webcam)
    cache.commit(out_dir, want)
    return counts


def _common_root(dirs: Sequence[Path]) -> Tuple[str, ...]:
    parts = [Path(d).resolve().parts for d in dirs]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return tuple(common) or ("/",)
