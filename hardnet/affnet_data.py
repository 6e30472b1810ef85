"""AffNet's training data: its configuration (:class:`AffNetConfig`) and the tilted patch
pairs of photos, cached.

Data (:func:`prepare_affine_pairs`, cached like :mod:`hardnet.data`, reusing its photo
loading, photometric changes, DoG detector, detector noise and photo split): for every photo
and draw, view B is view A warped by a random affine-plus-perspective ``H`` (A -> B) that
adds a **tilt** to the generator's rotation / zoom / shear: one axis, in a random direction,
compressed by ``1/t`` with ``t`` log-uniform in ``[1, max_tilt]`` (6); with probability
``tilt_swap`` the compression is in view A instead (B stretched by ``t``). The compressed view
is low-passed first along the compressed direction (``antialias``, as a camera would).
Each pair stores, for both views, a **context patch** of ``context_size`` (96) samples
around the keypoint with the sample spacing of the 32x32 descriptor patch (its central 32x32
is that patch; it reaches ``+-3.06 r``, room for shapes of elongation ~9 along an axis, 6 at
a diagonal), and the ground-truth local affine ``J`` (A -> B, the Jacobian of ``H`` at the
point).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from keynet.base import cache
from keynet.base.augment import random_homography
from keynet.base.files import image_source
from keynet.base.geometry import local_affine, warp_points

from .affnet import (MAX_ELONGATION, context_magnification)
from .data import KeypointFn, PatchPairConfig, _Detector, _photometric, load_photo, split_photos, valid_pairs
from .patches import PATCH_SIZE, extract_patches

log = logging.getLogger("hardnet.affnet_training")  # the training log names it as before the split

MANIFEST_VERSION = 1
ARRAY_KEYS = ("ctx_a", "ctx_b", "image", "kpt_a", "kpt_b", "jac", "tilt")
VAL_METRICS = {"fpr95": False, "fpr95_same_photo": False, "pos_dist": False, "nn_acc": True}


@dataclass
class AffNetConfig:
    """The affine shape network, its data (tilts, context), loss and validation."""

    width: int = field(default=16, metadata={"help": "channels of the first convolutions (AffNet: 16)"})
    dropout: float = field(default=0.25, metadata={"help": "dropout before the last convolution (AffNet: 0.25)"})
    max_tilt: float = field(default=6.0, metadata={"help": "tilt t between the views: one axis compressed by 1/t, "
                                                           "t log-uniform in [1, this], random direction"})
    tilt_swap: float = field(default=0.5, metadata={"help": "probability that the compressed view is A (B "
                                                            "stretched) instead of B"})
    antialias: bool = field(default=True, metadata={"help": "low-pass the compressed view along the compressed "
                                                            "direction before warping"})
    context_size: int = field(default=96, metadata={"help": "side of the stored context patches, samples at the "
                                                            "descriptor patch's spacing (even)"})
    valid_extent: float = field(default=1.5, metadata={"help": "keep a pair when the descriptor square enlarged "
                                                               "by this lies inside both views"})
    hardnet_weights: str = field(default="pretrained_nets/hardnet.pt", metadata={
        "help": "the frozen HardNet of the loss and the validation"})
    margin: float = field(default=1.0, metadata={"help": "margin of the hard-negative-constant loss"})
    anchor_swap: bool = field(default=True, metadata={"help": "hardest negative also over the positives' row"})
    ignore_radius: float = field(default=4.0, metadata={
        "help": "same-photo negatives closer than this x scale are ignored (0: off)"})
    max_elongation: float = field(default=MAX_ELONGATION, metadata={
        "help": "validation / inference: limit of the estimated shapes' elongation"})
    moments_iterations: int = field(default=4, metadata={"help": "Baumberg iterations of the moments baseline"})
    val_iterations: int = field(default=3, metadata={"help": "steps of the learned estimator in validation (as "
                                                             "at inference: AffineShapeEstimator's default)"})
    val_pairs: int = field(default=4000, metadata={"help": "validation pairs"})
    val_block: int = field(default=1000, metadata={"help": "candidates per NN-accuracy block"})
    val_metric: str = field(default="fpr95", metadata={"choices": tuple(VAL_METRICS),
                                                       "help": "validation metric that selects best.pt"})

    def __post_init__(self) -> None:
        if self.max_tilt < 1:
            raise ValueError(f"max_tilt must be >= 1, got {self.max_tilt}")
        if self.context_size < PATCH_SIZE or (self.context_size - PATCH_SIZE) % 2:
            raise ValueError(f"context_size must be >= {PATCH_SIZE} with an even difference, got {self.context_size}")
        if self.val_iterations < 1:
            raise ValueError(f"val_iterations must be >= 1, got {self.val_iterations}")
        if self.val_metric not in VAL_METRICS:
            raise ValueError(f"val_metric must be one of {tuple(VAL_METRICS)}, got {self.val_metric!r}")


# --------------------------------------------------------------------------- data
def sample_tilted_homography(rng: np.random.Generator, shape: Tuple[int, int], cfg: PatchPairConfig,
                             max_tilt: float, tilt_swap: float) -> Tuple[np.ndarray, float]:
    """Random ``H`` (A -> B) about the image centre: ``shift @ perspective @ tilt @ (shear @
    zoom @ rotation)``; ``tilt = R(phi) diag(1, 1/t) R(-phi)`` (``diag(1, t)`` when swapped).
    Returns ``(H, t)``."""
    h, w = shape
    aff = random_homography(rng, cfg.max_angle, cfg.max_zoom, cfg.max_shearing, cfg.min_zoom)
    t = float(np.exp(rng.uniform(0.0, np.log(max_tilt)))) if max_tilt > 1 else 1.0
    phi = rng.uniform(0.0, np.pi)
    swap = rng.uniform() < tilt_swap
    c, s = np.cos(phi), np.sin(phi)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tilt = rot @ np.diag([1.0, t if swap else 1.0 / t, 1.0]) @ rot.T
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-cfg.max_perspective, cfg.max_perspective, 2)
    cen = np.array([[1.0, 0, -w / 2.0], [0, 1.0, -h / 2.0], [0, 0, 1.0]])
    shift = rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * (w, h)
    back = np.array([[1.0, 0, w / 2.0 + shift[0]], [0, 1.0, h / 2.0 + shift[1]], [0, 0, 1.0]])
    m = back @ persp @ tilt @ aff @ cen
    return m / m[2, 2], t


def antialias_for(grey: np.ndarray, h_ab: np.ndarray) -> np.ndarray:
    """``grey`` (view A) low-passed for warping by ``h_ab``: a Gaussian of std
    ``0.5 sqrt(1 / s^2 - 1)`` along each input direction that the affine part compresses by
    ``s < 1`` (the singular vectors of the 2x2 part at the image centre)."""
    hh, ww = grey.shape
    j = local_affine(h_ab, np.array([[ww / 2.0, hh / 2.0]]))[0]
    _, sv, vt = np.linalg.svd(j)
    var = np.array([0.25 * max(1.0 / max(x, 1e-3) ** 2 - 1.0, 0.0) for x in sv])
    if var.max() < 0.09:  # std < 0.3 px: nothing to do
        return grey
    cov = vt.T @ np.diag(np.maximum(var, 1e-4)) @ vt
    rad = int(math.ceil(3.0 * math.sqrt(var.max())))
    yy, xx = np.mgrid[-rad:rad + 1, -rad:rad + 1].astype(np.float64)
    d = np.stack([xx, yy], -1)
    q = np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)
    k = np.exp(-0.5 * q)
    return cv2.filter2D(grey, -1, (k / k.sum()).astype(np.float32), borderType=cv2.BORDER_REFLECT)


def tilt_of(jac: np.ndarray) -> np.ndarray:
    """Tilt (ratio of the singular values) of ``(N, 2, 2)`` affine maps."""
    sv = np.linalg.svd(jac, compute_uv=False)
    return sv[:, 0] / np.maximum(sv[:, 1], 1e-12)


def _empty(c: int) -> Dict[str, np.ndarray]:
    return {"ctx_a": np.zeros((0, c, c), np.uint8), "ctx_b": np.zeros((0, c, c), np.uint8),
            "image": np.zeros(0, np.int32), "kpt_a": np.zeros((0, 3), np.float32),
            "kpt_b": np.zeros((0, 3), np.float32), "jac": np.zeros((0, 2, 2), np.float32),
            "tilt": np.zeros(0, np.float32)}


def affine_pairs_from_photo(bgr: np.ndarray, rng: np.random.Generator, cfg: PatchPairConfig, net: AffNetConfig,
                            detector) -> Dict[str, np.ndarray]:
    """The pairs of one draw from one photo: uint8 context patches ``ctx_a``, ``ctx_b``
    (N, C, C), keypoints ``kpt_a``, ``kpt_b`` (N, 3) x, y, scale (B with detector noise), the
    local affine ``jac`` (N, 2, 2) A -> B at the point and its ``tilt`` (N,)."""
    shape = bgr.shape[:2]
    c = net.context_size
    h_ab, _ = sample_tilted_homography(rng, shape, cfg, net.max_tilt, net.tilt_swap)
    grey_a = _photometric(bgr, rng, cfg)
    src_b = _photometric(bgr, rng, cfg)
    if net.antialias:
        src_b = antialias_for(src_b, h_ab)
    grey_b = cv2.warpPerspective(src_b, h_ab, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    kpt_a = detector(np.round(grey_a).astype(np.uint8))
    if len(kpt_a) == 0:
        return _empty(c)
    kpt_b = warp_points(kpt_a, h_ab)
    if cfg.position_noise > 0:
        kpt_b[:, :2] += rng.normal(0.0, cfg.position_noise, (len(kpt_b), 2)) * kpt_b[:, 2:3]
    if cfg.scale_noise > 0:
        kpt_b[:, 2] *= 2.0 ** rng.normal(0.0, cfg.scale_noise, len(kpt_b))
    ok = np.flatnonzero(valid_pairs(kpt_a, kpt_b, h_ab, shape, cfg.magnification * net.valid_extent))
    if len(ok) == 0:
        return _empty(c)
    sel = rng.permutation(ok)[:cfg.points_per_view]
    sel.sort()
    ka, kb = kpt_a[sel], kpt_b[sel]
    mag = context_magnification(c, cfg.magnification)
    with torch.no_grad():
        pa = extract_patches(torch.from_numpy(grey_a.astype(np.float32)), torch.from_numpy(ka).float(), patch_size=c,
                             magnification=mag)
        pb = extract_patches(torch.from_numpy(grey_b.astype(np.float32)), torch.from_numpy(kb).float(), patch_size=c,
                             magnification=mag)
    to8 = lambda p: np.clip(np.round(p[:, 0].numpy()), 0, 255).astype(np.uint8)  # noqa: E731
    jac = local_affine(h_ab, ka[:, :2])
    return {"ctx_a": to8(pa), "ctx_b": to8(pb), "image": np.zeros(len(sel), np.int32),
            "kpt_a": ka.astype(np.float32), "kpt_b": kb.astype(np.float32), "jac": jac.astype(np.float32),
            "tilt": tilt_of(jac).astype(np.float32)}


def generate(files: Sequence[Path], cfg: PatchPairConfig, net: AffNetConfig, split_id: int, progress: bool = True,
             keypoint_fn: Optional[KeypointFn] = None) -> Dict[str, List[np.ndarray]]:
    """Pairs of every (photo, draw), as lists of per-draw arrays (see :func:`save_chunks`);
    each draw has its own seeded generator."""
    detector = _Detector(dataclasses.replace(cfg, orientation="none"), keypoint_fn)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: Dict[str, List[np.ndarray]] = {k: [] for k in ARRAY_KEYS}
    from tqdm import tqdm
    bar = tqdm(files, desc=f"{'val' if split_id else 'train'} affine pairs", unit="photo", disable=not progress,
               mininterval=10)
    for i, path in enumerate(bar):
        bgr = load_photo(path, cfg.max_side)
        if bgr is None:
            continue
        for v in range(cfg.views_per_image):
            rng = np.random.default_rng([cfg.seed, split_id, i, v, 77])
            res = affine_pairs_from_photo(bgr, rng, cfg, net, detector)
            if len(res["ctx_a"]) == 0:
                continue
            res["image"][:] = i
            for k in ARRAY_KEYS:
                out[k].append(res[k])
    torch.set_num_threads(threads)
    return out


def save_chunks(path: Path, chunks: List[np.ndarray], empty: np.ndarray) -> int:
    """Write the concatenation of ``chunks`` to the ``.npy`` file ``path`` piece by piece (no
    second copy in memory; a temporary file renamed at the end); returns the row count."""
    path = Path(path)
    n = sum(len(c) for c in chunks)
    tmp = path.with_name(path.name + ".partial")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=empty.dtype, shape=(n,) + empty.shape[1:])
    pos = 0
    for c in chunks:
        arr[pos:pos + len(c)] = c
        pos += len(c)
    arr.flush()
    del arr
    os.replace(tmp, path)
    return n


def data_params(cfg: PatchPairConfig, net: AffNetConfig) -> Dict[str, Any]:
    """The generation parameters recorded in (and matched against) the manifest."""
    p = dataclasses.asdict(cfg)
    p.update({k: getattr(net, k) for k in ("max_tilt", "tilt_swap", "antialias", "context_size", "valid_extent")})
    return p


def prepare_affine_pairs(image_dir, out_dir, cfg: PatchPairConfig, net: AffNetConfig, progress: bool = True,
                         force: bool = False, max_images: int = 0, keypoint_fn: Optional[KeypointFn] = None) -> Path:
    """Generate (or reuse) the cached affine pairs in ``out_dir``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    files, root = image_source(image_dir)
    if max_images > 0:
        files = files[:max_images]
    want = cache.manifest_for(MANIFEST_VERSION, data_params(cfg, net), files, root)
    if cache.reuse_or_begin(out_dir, want, cache.split_arrays(ARRAY_KEYS), "affine patch pairs", force):
        return out_dir
    train_files, val_files = split_photos(files, cfg)
    counts = {}
    t0 = time.time()
    for split, split_files, sid in (("train", train_files, 0), ("val", val_files, 1)):
        chunks = generate(split_files, cfg, net, sid, progress=progress, keypoint_fn=keypoint_fn)
        empty = _empty(net.context_size)
        for k in ARRAY_KEYS:
            counts[split] = save_chunks(out_dir / f"{split}_{k}.npy", chunks.pop(k), empty[k])
        log.info("%s: %d affine pairs from %d photos (%.0f s)", split, counts[split], len(split_files),
                 time.time() - t0)
    want.update(counts=counts, train_images=len(train_files), val_images=len(val_files),
                val_files=[str(Path(f).relative_to(root)) for f in val_files], generation_s=round(time.time() - t0, 1))
    cache.commit(out_dir, want)
    return out_dir


def load_split(out_dir, split: str) -> Dict[str, np.ndarray]:
    """The arrays of one split; the context patches memory-mapped."""
    out_dir = Path(out_dir)
    return {k: np.load(out_dir / f"{split}_{k}.npy", mmap_mode="r" if k.startswith("ctx") else None)
            for k in ARRAY_KEYS}


