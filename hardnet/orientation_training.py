"""Training the orientation network (:class:`hardnet.orientation.OriNet`) on our own patch
pairs, self-supervised, with the project's one training skeleton (:func:`keynet.base.training.fit`).

Data: the HardNet patch-pair generator (:mod:`hardnet.data`) with rotations over the whole
circle between the views (``max_angle=180``); each pair carries the rotation ``angle`` of
B's content relative to A's at the point (from the local affine of the homography), plus
the generator's zoom, shear, perspective, photometric changes and detector noise.

Loss: the network must be equivariant, ``ori(B) = ori(A) + angle``; with unit vectors
``u = OriNet(patch) / |OriNet(patch)|`` the loss is ``1 - cos(ori(B) - ori(A) - angle)``
(averaged over the batch). No absolute orientation is prescribed: any equivariant
estimator is a solution, and a constant one is not. Augmentation: each patch is also
turned by a random angle with probability ``rotate_prob`` (the target moves with it), so
the network sees every orientation of every patch.

Validation (held-out photos): mean absolute error of ``ori(B) - ori(A) - angle`` in degrees
(``best.pt`` has the lowest), its median, and the share of pairs within 15 / 30 degrees; the
classical dominant gradient orientation is scored on the same pairs for reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
from torch import nn

from keynet.base.geometry import angle_difference
from keynet.base.training import LoopConfig, fit

from .data import KeypointFn, PatchPairConfig
from .orientation import OrientationEstimator, OriNet, rotate_patches, rotation_matrices
from .patch_task import PatchPairTask
from .training import to_tensor
from .weights import export_checkpoint, load_orinet_checkpoint, save_orinet


def _ori_loop() -> LoopConfig:
    return LoopConfig(epochs=12, batch_size=256, pairs_per_epoch=51200, optimizer="adam", lr=3e-3,
                      weight_decay=1e-4, schedule="linear", drop_last=True, val_every=1, val_initial=True,
                      val_last=True, patience=-1, seed=0, workers=0)


def _ori_data() -> PatchPairConfig:
    return PatchPairConfig(max_angle=180.0, points_per_view=48, views_per_image=2, val_images=100)


@dataclass
class OriNetConfig:
    """The orientation network, its augmentation and validation."""

    width: int = field(default=16, metadata={"help": "channels of the first convolution"})
    c4: bool = field(default=True, metadata={"help": "average over the 4 right-angle rotations (exactly "
                                                     "equivariant to them)"})
    rotate_prob: float = field(default=0.5, metadata={"help": "probability of turning a training patch by a "
                                                              "random angle (target adjusted)"})
    val_pairs: int = field(default=4000, metadata={"help": "validation pairs"})


@dataclass
class TrainConfig:
    """Everything an orientation training run needs."""

    image_dir: str = field(default="", metadata={
        "nargs": "+", "required": True, "help": "folder(s) of training photos (several: their union)"})
    max_images: int = field(default=0, metadata={"help": "use only the first N photos (0: all)"})
    dataset_dir: str = field(default="datasets/orientation_pairs", metadata={"help": "patch-pair cache"})
    out_dir: str = field(default="runs/orinet", metadata={"help": "run folder: last.pt, best.pt, history"})
    regenerate: bool = field(default=False, metadata={"help": "regenerate the patch pairs even if cached"})
    resume: Optional[str] = field(default=None, metadata={
        "nargs": "?", "const": "auto", "help": "continue a run: a last.pt, or no value for <out-dir>/last.pt"})
    data: PatchPairConfig = field(default_factory=_ori_data, metadata={"group": "patch pairs"})
    net: OriNetConfig = field(default_factory=OriNetConfig, metadata={"group": "network and validation"})
    loop: LoopConfig = field(default_factory=_ori_loop, metadata={"group": "optimisation and run"})
    command: str = field(default="", metadata={"cli": False})


# --------------------------------------------------------------------------- pieces
def equivariance_loss(va: torch.Tensor, vb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos(ori(b) - ori(a) - angle))`` for output vectors ``va``, ``vb`` (N, 2) and
    the true relative rotation ``angle`` (N,) radians."""
    ua = nn.functional.normalize(va, dim=1, eps=1e-8)
    ub = nn.functional.normalize(vb, dim=1, eps=1e-8)
    target = torch.einsum("nij,nj->ni", rotation_matrices(angle), ua)  # ua turned by angle
    return (1.0 - (ub * target).sum(1)).mean()


def angular_errors(ang_a: np.ndarray, ang_b: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """``|ori(b) - ori(a) - angle|`` wrapped to [0, 180] degrees (inputs in radians / degrees:
    ``ang_a``, ``ang_b`` radians, ``angle`` degrees)."""
    return angle_difference(np.rad2deg(ang_b - ang_a), angle)


def error_summary(err: np.ndarray, prefix: str = "") -> Dict[str, float]:
    return {f"{prefix}mean_err": float(err.mean()), f"{prefix}median_err": float(np.median(err)),
            f"{prefix}within15": float((err <= 15).mean()), f"{prefix}within30": float((err <= 30).mean())}


@torch.no_grad()
def patch_angles(fn, patches: np.ndarray, device, batch: int = 2048) -> np.ndarray:
    out = [fn(to_tensor(patches[i:i + batch], device)).cpu().numpy() for i in range(0, len(patches), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def validation_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 404]).permutation(n_total)[:n])


# --------------------------------------------------------------------------- the task
class OriNetTask(PatchPairTask):
    """OriNet on patch pairs with known relative rotation, for :func:`keynet.base.training.fit`."""

    metric = "mean_err"
    maximise = False
    order_salt = 505
    checkpoint_io = (save_orinet, load_orinet_checkpoint)

    def __init__(self, cfg: TrainConfig, keypoint_fn: Optional[KeypointFn] = None) -> None:
        super().__init__(cfg, keypoint_fn)
        self.baseline: Dict[str, float] = {}

    def build_model(self) -> nn.Module:
        return OriNet(self.cfg.net.width, self.cfg.net.c4)

    def prepare_data(self, main: bool) -> Dict[str, Any]:
        cfg = self.cfg
        info = self.load_patch_pairs(main)
        if len(self.val_set["a"]) == 0:
            raise ValueError(f"no validation pairs in {cfg.dataset_dir} (more photos or --val-images)")
        self.val_idx = validation_indices(len(self.val_set["a"]), cfg.net.val_pairs, cfg.loop.seed)
        grad = OrientationEstimator("gradient", device="cpu")
        v = self.val_set
        err = angular_errors(patch_angles(grad.angles_of_patches, v["a"][self.val_idx], "cpu"),
                             patch_angles(grad.angles_of_patches, v["b"][self.val_idx], "cpu"),
                             v["angle"][self.val_idx])
        self.baseline = error_summary(err, "gradient_")
        return {**info, "gradient_baseline": self.baseline}

    def batches(self, indices: np.ndarray, batch_size: int, device: torch.device, workers: int) -> Iterable[Any]:
        tr = self.train_set
        for i in range(0, len(indices), batch_size):
            bi = indices[i:i + batch_size]
            yield (to_tensor(tr["a"][bi], device), to_tensor(tr["b"][bi], device),
                   torch.from_numpy(np.deg2rad(tr["angle"][bi]).astype(np.float32)).to(device))

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        a, b, angle = batch
        p = self.cfg.net.rotate_prob
        if p > 0:
            n = len(a)
            ra = torch.rand(n, generator=generator) * (2 * math.pi) * (torch.rand(n, generator=generator) < p)
            rb = torch.rand(n, generator=generator) * (2 * math.pi) * (torch.rand(n, generator=generator) < p)
            ra, rb = ra.to(a.device), rb.to(a.device)
            a, b = rotate_patches(a, ra), rotate_patches(b, rb)
            angle = angle + rb - ra
        return equivariance_loss(model(a), model(b), angle)

    def validate(self, model: nn.Module, device: torch.device, progress: bool) -> Dict[str, float]:
        was = model.training
        model.eval()
        net = model.module if hasattr(model, "module") else model
        v, idx = self.val_set, self.val_idx
        err = angular_errors(patch_angles(net.angle, v["a"][idx], device), patch_angles(net.angle, v["b"][idx], device),
                             v["angle"][idx])
        model.train(was)
        return {**error_summary(err), **self.baseline}


def train(cfg: TrainConfig, keypoint_fn: Optional[KeypointFn] = None) -> Dict[str, Any]:
    """Train (or resume) the orientation network; returns the summary of :func:`keynet.base.training.fit`."""
    return fit(OriNetTask(cfg, keypoint_fn), cfg.loop, cfg.out_dir, resume=cfg.resume, command=cfg.command)


def export_weights(src, dst, **metadata) -> dict:
    """Write the model of checkpoint ``src`` to ``dst`` without the optimiser state (the
    shipped file), keeping the training metadata plus ``metadata``."""
    return export_checkpoint(src, dst, load_orinet_checkpoint, save_orinet, **metadata)
