"""Training the affine shape network (:class:`hardnet.affnet.AffNet`) on our own patch pairs
with the project's one training skeleton (:func:`keynet.base.training.fit`), as AffNet
(Mishkin et al., ECCV 2018) is trained: for the descriptor, not for repeatability.

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

Loss (the paper's "hard negative constant"): AffNet estimates the shape ``A_A``, ``A_B`` on
each view's central 32x32 patch; each view's context is resampled through its shape to the
shape-normalised 32x32 patch (``grid_sample``, differentiable); B's frame is also turned by
the rotation ``Q`` that aligns the two normalised frames given the ground truth (the
rotation part of ``A_B^-1 J A_A``, a constant: the shape is "up-is-up" and carries no
orientation). The frozen HardNet (``pretrained_nets/hardnet.pt``, eval mode, no gradient into
its weights, gradient through its input) describes both; with ``d`` the descriptor
distance and ``n*`` the hardest in-batch negative (anchor swap, same-point negatives
ignored) ``loss = mean(max(0, margin + d(a, p) - d(a, n*)))`` where ``d(a, n*)`` is detached.

Validation (pairs from held-out photos, the same ``Q`` alignment for every method): mean
positive descriptor distance, FPR95 (negatives: the positive of another photo, and of
another point of the same photo), NN accuracy among 1000, and the residual tilt (elongation
of ``A_B^-1 J A_A / sqrt(det J)``: 1 when the two shapes agree with the ground truth), for the
learned shapes; the identity shape and kornia's second-moment (Baumberg) estimator are
scored once on the same pairs for reference. ``best.pt`` has the best ``val_metric``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from keynet.base import cache
from keynet.base.augment import random_homography
from keynet.base.files import image_source
from keynet.base.geometry import local_affine, warp_points
from keynet.base.training import LoopConfig, fit

from .affnet import (AffNet, AffineShapeEstimator, MAX_ELONGATION, central_patches, context_magnification, elongation,
                     resample_context, rotation_part)
from .data import KeypointFn, PatchPairConfig, _Detector, _photometric, load_photo, split_photos, valid_pairs
from .loss import distance_matrix, hardest_negatives, same_point_mask
from .patch_task import PatchPairTask
from .patches import PATCH_SIZE, extract_patches
from .training import fpr_at_95, same_photo_partners, validation_indices
from .weights import export_checkpoint, load_affnet_checkpoint, load_hardnet, save_affnet

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
ARRAY_KEYS = ("ctx_a", "ctx_b", "image", "kpt_a", "kpt_b", "jac", "tilt")
VAL_METRICS = {"fpr95": False, "fpr95_same_photo": False, "pos_dist": False, "nn_acc": True}


def _affnet_loop() -> LoopConfig:
    return LoopConfig(epochs=6, batch_size=256, pairs_per_epoch=32768, optimizer="adam", lr=1e-3,
                      weight_decay=1e-4, schedule="linear", drop_last=True, val_every=1, val_initial=True,
                      val_last=True, patience=-1, seed=0, workers=0)


def _affnet_data() -> PatchPairConfig:
    return PatchPairConfig(points_per_view=64, views_per_image=2, val_images=100, max_angle=30.0,
                           max_perspective=0.0003)


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


@dataclass
class TrainConfig:
    """Everything an AffNet training run needs."""

    image_dir: str = field(default="", metadata={
        "nargs": "+", "required": True, "help": "folder(s) of training photos (several: their union)"})
    max_images: int = field(default=0, metadata={"help": "use only the first N photos (0: all)"})
    dataset_dir: str = field(default="datasets/affnet_pairs", metadata={"help": "patch-pair cache"})
    out_dir: str = field(default="runs/affnet", metadata={"help": "run folder: last.pt, best.pt, history"})
    regenerate: bool = field(default=False, metadata={"help": "regenerate the patch pairs even if cached"})
    init_weights: str = field(default="", metadata={
        "help": "AffNet weights to start from (fine-tuning: a shipped file or a run's best.pt); empty: the "
                "identity initialisation"})
    resume: Optional[str] = field(default=None, metadata={
        "nargs": "?", "const": "auto", "help": "continue a run: a last.pt, or no value for <out-dir>/last.pt"})
    data: PatchPairConfig = field(default_factory=_affnet_data, metadata={"group": "patch pairs"})
    net: AffNetConfig = field(default_factory=AffNetConfig, metadata={"group": "network, tilts, loss, validation"})
    loop: LoopConfig = field(default_factory=_affnet_loop, metadata={"group": "optimisation and run"})
    command: str = field(default="", metadata={"cli": False})


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
    arrays = [f"{s}_{k}" for s in ("train", "val") for k in ARRAY_KEYS]
    if not force and cache.reusable(out_dir, want, arrays, "affine patch pairs"):
        return out_dir
    cache.begin(out_dir)
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


# --------------------------------------------------------------------------- pieces
def hard_negative_constant_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = 1.0,
                                anchor_swap: bool = True, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """AffNet's HardNegC loss: ``mean(max(0, margin + d(a_i, p_i) - d_neg_i))`` with ``d_neg_i``
    the hardest in-batch negative distance (:func:`hardnet.loss.hardest_negatives`) treated
    as a constant (no gradient)."""
    if anchor.shape != positive.shape or anchor.dim() != 2 or anchor.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) anchors and positives of equal shape, got {tuple(anchor.shape)} and "
                         f"{tuple(positive.shape)}")
    dist = distance_matrix(anchor, positive)
    neg = hardest_negatives(dist, anchor_swap, ignore).detach()
    return torch.clamp(margin + dist.diagonal() - neg, min=0.0).mean()


def to_float(patches: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, S, S) -> float (N, 1, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(patches)).to(device).float().div_(255.0)[:, None]


def normalised_jacobians(jac: torch.Tensor) -> torch.Tensor:
    """``J / sqrt(det J)`` (the shape-level map between the views' isotropic frames)."""
    det = (jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]).abs()
    return jac / torch.sqrt(det)[:, None, None]


def aligned_frames(shape_a: torch.Tensor, shape_b: torch.Tensor, jac_n: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """B's sampling frame ``A_B Q`` (``Q``: the rotation part of ``A_B^-1 J_n A_A``, detached)
    and the residual map ``A_B^-1 J_n A_A`` itself."""
    resid = torch.linalg.solve(shape_b, jac_n @ shape_a)
    return shape_b @ rotation_part(resid.detach()), resid


def normalised_pair(ctx_a: torch.Tensor, ctx_b: torch.Tensor, shape_a: torch.Tensor, shape_b: torch.Tensor,
                    jac_n: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape-normalised 32x32 patches of both views (B turned onto A by ``Q``) and the residual."""
    frame_b, resid = aligned_frames(shape_a, shape_b, jac_n)
    return resample_context(ctx_a, shape_a), resample_context(ctx_b, frame_b), resid


@torch.no_grad()
def score_shapes(hardnet: nn.Module, val: Dict[str, np.ndarray], idx: np.ndarray, partner: np.ndarray,
                 partner_same: np.ndarray, shapes_a: torch.Tensor, shapes_b: torch.Tensor, device,
                 block: int = 1000, batch: int = 1000) -> Dict[str, float]:
    """Descriptor metrics of the pairs ``idx`` normalised by the given shapes (CPU tensors)."""
    da, db, res = [], [], []
    for i in range(0, len(idx), batch):
        bi = idx[i:i + batch]
        ca, cb = to_float(val["ctx_a"][bi], device), to_float(val["ctx_b"][bi], device)
        jn = normalised_jacobians(torch.from_numpy(np.asarray(val["jac"][bi])).to(device))
        pa, pb, r = normalised_pair(ca, cb, shapes_a[i:i + batch].to(device), shapes_b[i:i + batch].to(device), jn)
        da.append(hardnet(pa).cpu())
        db.append(hardnet(pb).cpu())
        res.append(elongation(r).cpu())
    da, db, resid = torch.cat(da), torch.cat(db), torch.cat(res).numpy()
    pos = (da - db).norm(dim=1).numpy()
    img = val["image"][idx]
    keep = img[partner] != img
    neg = (da - db[partner]).norm(dim=1).numpy()[keep]
    has = partner_same >= 0
    neg_same = (da[has] - db[partner_same[has]]).norm(dim=1).numpy()
    correct, total = 0, 0
    for i in range(0, len(idx), block):
        a, b = da[i:i + block], db[i:i + block]
        if len(a) >= 2:
            correct += int((torch.cdist(a, b).argmin(1) == torch.arange(len(a))).sum())
            total += len(a)
    tilt = val["tilt"][idx]
    high = tilt >= 3.0
    return {"fpr95": fpr_at_95(pos, neg), "fpr95_same_photo": fpr_at_95(pos, neg_same),
            "nn_acc": correct / max(total, 1), "pos_dist": float(pos.mean()),
            "pos_dist_tilt3": float(pos[high].mean()) if high.any() else float("nan"),
            "residual_tilt": float(np.median(resid)), "residual_tilt_tilt3": float(np.median(resid[high]))
            if high.any() else float("nan")}


@torch.no_grad()
def estimator_shapes(est: AffineShapeEstimator, ctx: np.ndarray, device, batch: int = 1000) -> torch.Tensor:
    """Shapes of the context patches' keypoints by ``est`` (its iterations resample the context)."""
    out = []
    for i in range(0, len(ctx), batch):
        c = to_float(ctx[i:i + batch], device)
        out.append(est.iterate(lambda f: resample_context(c, f), len(c), device).cpu())
    return torch.cat(out) if out else torch.zeros((0, 2, 2))


def shape_stats(sa: torch.Tensor, sb: torch.Tensor) -> Dict[str, float]:
    e = torch.cat([elongation(sa), elongation(sb)]).numpy()
    return {"median_elongation": float(np.median(e)), "share_elongation_2": float(np.mean(e >= 2.0))}


# --------------------------------------------------------------------------- the task
class AffNetTask(PatchPairTask):
    """AffNet on affine patch pairs through a frozen HardNet, for :func:`keynet.base.training.fit`
    (its own pair generator, :func:`prepare_affine_pairs`: context patches and the local affine)."""

    order_salt = 606
    checkpoint_io = (save_affnet, load_affnet_checkpoint)

    def __init__(self, cfg: TrainConfig, keypoint_fn: Optional[KeypointFn] = None) -> None:
        super().__init__(cfg, keypoint_fn)
        self.metric = cfg.net.val_metric
        self.maximise = VAL_METRICS[cfg.net.val_metric]
        self.baseline: Dict[str, float] = {}
        self.hardnet: Optional[nn.Module] = None

    def build_model(self) -> nn.Module:
        model = AffNet(self.cfg.net.width, self.cfg.net.dropout)
        if self.cfg.init_weights:
            start, _, _ = load_affnet_checkpoint(self.cfg.init_weights)
            if start.width != model.width:
                raise ValueError(f"{self.cfg.init_weights}: AffNet of width {start.width}, the run has width "
                                 f"{model.width} (--width)")
            model.load_state_dict(start.state_dict())
        return model

    def _frozen_hardnet(self, device) -> nn.Module:
        if self.hardnet is None:
            model, _ = load_hardnet(self.cfg.net.hardnet_weights)
            for p in model.parameters():
                p.requires_grad_(False)
            self.hardnet = model.eval()
        return self.hardnet.to(device).eval()

    def prepare_data(self, main: bool) -> Dict[str, Any]:
        cfg = self.cfg
        hardnet = self._frozen_hardnet("cpu")  # a missing HardNet fails before any run folder exists
        if main:
            if not cfg.image_dir:
                raise ValueError("no photo folder given (--image-dir)")
            prepare_affine_pairs(cfg.image_dir, cfg.dataset_dir, cfg.data, cfg.net, progress=cfg.loop.progress,
                                 force=cfg.regenerate, max_images=cfg.max_images, keypoint_fn=self.keypoint_fn)
        self.train_set = load_split(cfg.dataset_dir, "train")
        self.val_set = load_split(cfg.dataset_dir, "val")
        v = self.val_set
        if len(v["ctx_a"]) < 2:
            raise ValueError(f"fewer than 2 validation pairs in {cfg.dataset_dir} (more photos or --val-images)")
        seed = cfg.loop.seed
        self.val_idx, self.val_partner = validation_indices({"a": v["ctx_a"], "image": v["image"]},
                                                            cfg.net.val_pairs, seed)
        radius = cfg.net.ignore_radius if cfg.net.ignore_radius > 0 else 4.0
        self.val_same = same_photo_partners({"image": v["image"], "kpt_a": v["kpt_a"]}, self.val_idx, seed, radius)
        t0 = time.time()
        n = len(self.val_idx)
        eye = torch.eye(2).expand(n, 2, 2).clone()
        self.baseline = {f"identity_{k}": x for k, x in self._score(hardnet, eye, eye, "cpu").items()}
        mom = AffineShapeEstimator("moments", device="cpu", iterations=cfg.net.moments_iterations,
                                   max_elongation=cfg.net.max_elongation)
        ma = estimator_shapes(mom, v["ctx_a"][self.val_idx], "cpu")
        mb = estimator_shapes(mom, v["ctx_b"][self.val_idx], "cpu")
        self.baseline.update({f"moments_{k}": x for k, x in {**self._score(hardnet, ma, mb, "cpu"),
                                                               **shape_stats(ma, mb)}.items()})
        log.info("validation baselines on %d pairs (%.0f s): %s", n, time.time() - t0,
                 ", ".join(f"{k} {x:.4f}" for k, x in self.baseline.items()))
        man = cache.read_manifest(cfg.dataset_dir)
        return {"dataset": str(cfg.dataset_dir), "params": man.get("params"), "source": man.get("source"),
                "counts": man.get("counts"), "generation_s": man.get("generation_s"), "baselines": self.baseline,
                "val_pairs": n, "hardnet_weights": cfg.net.hardnet_weights}

    def _score(self, hardnet, sa, sb, device) -> Dict[str, float]:
        return score_shapes(hardnet, self.val_set, self.val_idx, self.val_partner, self.val_same, sa, sb, device,
                            self.cfg.net.val_block)

    def train_size(self) -> int:
        return len(self.train_set["ctx_a"])

    def batches(self, indices: np.ndarray, batch_size: int, device: torch.device, workers: int) -> Iterable[Any]:
        tr = self.train_set
        for i in range(0, len(indices), batch_size):
            bi = indices[i:i + batch_size]
            order = np.argsort(bi, kind="stable")  # sorted reads from the memory map, same batch
            srt = bi[order]
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            ca = to_float(tr["ctx_a"][srt], device)[inv]
            cb = to_float(tr["ctx_b"][srt], device)[inv]
            jn = normalised_jacobians(torch.from_numpy(tr["jac"][bi]).to(device))
            ignore = None
            if self.cfg.net.ignore_radius > 0:
                ka = torch.from_numpy(tr["kpt_a"][bi])
                ignore = same_point_mask(torch.from_numpy(tr["image"][bi]), ka[:, :2], ka[:, 2],
                                         self.cfg.net.ignore_radius).to(device)
            yield ca, cb, jn, ignore

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        ca, cb, jn, ignore = batch
        n = len(ca)
        hardnet = self._frozen_hardnet(ca.device)
        shapes = model(torch.cat([central_patches(ca), central_patches(cb)]))
        pa, pb, _ = normalised_pair(ca, cb, shapes[:n], shapes[n:], jn)
        desc = hardnet(torch.cat([pa, pb]))
        net = self.cfg.net
        return hard_negative_constant_loss(desc[:n], desc[n:], net.margin, net.anchor_swap, ignore)

    def validate(self, model: nn.Module, device: torch.device, progress: bool) -> Dict[str, float]:
        was = model.training
        net = model.module if hasattr(model, "module") else model
        net.eval()
        est = AffineShapeEstimator("learned", net, device=device, iterations=self.cfg.net.val_iterations,
                                   max_elongation=self.cfg.net.max_elongation)
        v, idx = self.val_set, self.val_idx
        sa = estimator_shapes(est, v["ctx_a"][idx], device)
        sb = estimator_shapes(est, v["ctx_b"][idx], device)
        out = {**self._score(self._frozen_hardnet(device), sa, sb, device), **shape_stats(sa, sb), **self.baseline}
        model.train(was)
        return out


def train(cfg: TrainConfig, keypoint_fn: Optional[KeypointFn] = None) -> Dict[str, Any]:
    """Train (or resume) AffNet; returns the summary of :func:`keynet.base.training.fit`."""
    return fit(AffNetTask(cfg, keypoint_fn), cfg.loop, cfg.out_dir, resume=cfg.resume, command=cfg.command)


def export_weights(src, dst, **metadata) -> dict:
    """Write the model of checkpoint ``src`` to ``dst`` without the optimiser state (the
    shipped file), keeping the training metadata plus ``metadata``."""
    return export_checkpoint(src, dst, load_affnet_checkpoint, save_affnet, **metadata)


# --------------------------------------------------------------------------- command line
