"""Training the affine shape network (:class:`hardnet.affnet.AffNet`) on our own patch pairs
with the project's one training skeleton (:func:`keynet.base.training.fit`), as AffNet
(Mishkin et al., ECCV 2018) is trained: for the descriptor, not for repeatability.

The parts live beside this task, as HardNet's and OriNet's: :mod:`hardnet.affnet_data`
(:class:`AffNetConfig` and the pairs, :func:`prepare_affine_pairs`) and
:mod:`hardnet.affnet_loss` (the loss, the normalised pairs, the validation scores); their
names are re-exported here (the old import path).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
from torch import nn

from keynet.base import cache
from keynet.base.training import LoopConfig, fit

from .affnet import AffNet, AffineShapeEstimator, central_patches
from .affnet_data import (ARRAY_KEYS, MANIFEST_VERSION, VAL_METRICS, AffNetConfig, affine_pairs_from_photo,
                          antialias_for, data_params, generate, load_split, prepare_affine_pairs,
                          sample_tilted_homography, save_chunks, tilt_of)
from .affnet_loss import (aligned_frames, estimator_shapes, hard_negative_constant_loss, normalised_jacobians,
                          normalised_pair, score_shapes, shape_stats, to_float)
from .data import KeypointFn, PatchPairConfig
from .loss import same_point_mask
from .patch_task import PatchPairTask
from .training import same_photo_partners, validation_indices
from .weights import export_checkpoint, load_affnet_checkpoint, load_hardnet, save_affnet

#: The data and loss names, re-exported here (their old import path).
__all__ = [
    "ARRAY_KEYS", "AffNetConfig", "AffNetTask", "MANIFEST_VERSION", "TrainConfig", "VAL_METRICS",
    "affine_pairs_from_photo", "aligned_frames", "antialias_for", "data_params", "estimator_shapes", "export_weights",
    "generate", "hard_negative_constant_loss", "load_split", "normalised_jacobians", "normalised_pair",
    "prepare_affine_pairs", "sample_tilted_homography", "save_chunks", "score_shapes", "shape_stats", "tilt_of",
    "to_float", "train",
]

log = logging.getLogger(__name__)


def _affnet_loop() -> LoopConfig:
    return LoopConfig(epochs=6, batch_size=256, pairs_per_epoch=32768, optimizer="adam", lr=1e-3,
                      weight_decay=1e-4, schedule="linear", drop_last=True, val_every=1, val_initial=True,
                      val_last=True, patience=-1, seed=0, workers=0)


def _affnet_data() -> PatchPairConfig:
    return PatchPairConfig(points_per_view=64, views_per_image=2, val_images=100, max_angle=30.0,
                           max_perspective=0.0003)


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
