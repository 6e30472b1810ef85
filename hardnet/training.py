"""Training HardNet on cached patch pairs (:mod:`hardnet.data`) with the project's one
training skeleton (:func:`keynet.base.training.fit`): :class:`HardNetTask` brings the network,
the pairs, the HardNet loss and the validation; the loop, schedule, checkpoints, resume,
history and early stopping are the skeleton's (shared with Key.Net).

* Every epoch takes ``pairs_per_epoch`` training pairs from seeded passes over the training
  set (pass k is permutation k of all pairs); full batches only (in-batch negatives).
* Learning rate: linear decay to 0 over all steps (HardNet paper) by default.
* Validation on the held-out pairs (photos disjoint from training) before training and after
  every epoch: FPR95 (false positive rate at 95% recall, negatives = each anchor with the
  positive of another photo; and, harder, with the positive of another point of the same
  photo) and NN accuracy (share of anchors whose nearest positive among ``val_block``
  candidates is their own). ``best.pt`` has the lowest FPR95.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from keynet.base.training import LoopConfig, fit

from .data import KeypointFn, PatchPairConfig
from .loss import hardnet_loss, same_point_mask
from .model import HardNet
from .patch_task import PatchPairTask
from .real_validation import evaluate, load_eval_set, network_describer, summarise
from .weights import HardNetWeightsError, export_checkpoint, load_hardnet, load_hardnet_checkpoint, save_hardnet


def _hardnet_loop() -> LoopConfig:
    return LoopConfig(epochs=6, batch_size=256, pairs_per_epoch=40960, optimizer="adam", lr=1e-3, momentum=0.9,
                      dampening=0.9, weight_decay=1e-4, schedule="linear", drop_last=True, val_every=1,
                      val_initial=True, val_last=True, patience=-1, seed=0, workers=0)


@dataclass
class HardNetConfig:
    """The HardNet network, loss and validation."""

    margin: float = field(default=1.0, metadata={"help": "triplet margin"})
    anchor_swap: bool = field(default=True, metadata={"help": "anchor swap (HardNet paper)"})
    dropout: float = field(default=0.3, metadata={"help": "dropout before the last convolution"})
    init_gain: float = field(default=0.6, metadata={"help": "orthogonal init gain of the convolutions (official)"})
    ignore_radius: float = field(default=4.0, metadata={
        "help": "same-photo negatives closer than this x scale are ignored (0: off)"})
    fliprot: bool = field(default=False, metadata={"help": "random flip / 90-degree rotation of both patches"})
    val_pairs: int = field(default=3000, metadata={"help": "validation pairs"})
    real_val: str = field(default="", metadata={
        "help": "a real validation set made by keynet hardnet-data (its val/ folder): matching accuracy on real "
                "image pairs after every epoch (val_real_*); empty: none"})
    select_metric: str = field(default="fpr95", metadata={
        "choices": ("fpr95", "real_score"),
        "help": "the validation number that chooses best.pt: fpr95 (lowest, patch pairs of the photos) or "
                "real_score (highest, mean MMA of the real validation groups; needs --real-val)"})
    val_block: int = field(default=1000, metadata={"help": "candidates per NN-accuracy block"})


@dataclass
class TrainConfig:
    """Everything a HardNet training run needs."""

    image_dir: str = field(default="", metadata={
        "nargs": "+", "required": True, "help": "folder(s) of training photos (several: their union)"})
    extra_pairs: str = field(default="", metadata={
        "nargs": "*", "help": "folders of ready patch pairs (keynet hardnet-data: webcam/, sfm/) whose train split "
                              "joins the photos' pairs; their val splits are validated apart (val_<folder>_*)"})
    extra_repeat: int = field(default=1, metadata={
        "help": "each --extra-pairs train pair appears this many times in the training set (oversampling the "
                "real pairs against the photos' synthetic ones)"})
    max_images: int = field(default=0, metadata={"help": "use only the first N photos (0: all)"})
    dataset_dir: str = field(default="datasets/hardnet_pairs", metadata={"help": "patch-pair cache"})
    out_dir: str = field(default="runs/hardnet", metadata={"help": "run folder: last.pt, best.pt, history"})
    regenerate: bool = field(default=False, metadata={"help": "regenerate the patch pairs even if cached"})
    init_weights: str = field(default="", metadata={
        "help": "HardNet weights to start from (fine-tuning, e.g. pretrained_nets/hardnet.pt); empty: the "
                "official random initialisation"})
    resume: Optional[str] = field(default=None, metadata={
        "nargs": "?", "const": "auto", "help": "continue a run: a last.pt, or no value for <out-dir>/last.pt"})
    data: PatchPairConfig = field(default_factory=PatchPairConfig, metadata={"group": "patch pairs"})
    net: HardNetConfig = field(default_factory=HardNetConfig, metadata={"group": "network, loss, validation"})
    loop: LoopConfig = field(default_factory=_hardnet_loop, metadata={"group": "optimisation and run"})
    command: str = field(default="", metadata={"cli": False})


#: The HardNet paper's optimisation (``--paper-defaults``).
PAPER_DEFAULTS = {"loop": dict(optimizer="sgd", lr=10.0, momentum=0.9, dampening=0.9, weight_decay=1e-4,
                               batch_size=1024, schedule="linear"),
                  "net": dict(margin=1.0, anchor_swap=True, dropout=0.3)}


# --------------------------------------------------------------------------- pieces

def init_weights(model: nn.Module, gain: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)


def to_tensor(patches: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, 32, 32) -> float (N, 1, 32, 32) in [0, 1] (HardNet normalises per patch)."""
    return torch.from_numpy(np.ascontiguousarray(patches)).to(device).float().div_(255.0)[:, None]


def fliprot(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    n = a.shape[0]
    rot = torch.rand(n, generator=gen) < 0.5
    flip = torch.rand(n, generator=gen) < 0.5
    for t in (a, b):
        t[rot] = t[rot].transpose(2, 3)
        t[flip] = t[flip].flip(3)
    return a, b


@torch.no_grad()
def describe(model: HardNet, patches: np.ndarray, device, batch: int = 1024) -> torch.Tensor:
    model.eval()
    out = [model(to_tensor(patches[i:i + batch], device)).cpu() for i in range(0, len(patches), batch)]
    return torch.cat(out) if out else torch.zeros((0, 128))


def fpr_at_95(pos: np.ndarray, neg: np.ndarray) -> float:
    """False positive rate at the distance threshold that accepts 95% of the positives."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    thr = np.sort(pos)[int(math.ceil(0.95 * len(pos))) - 1]
    return float(np.mean(neg <= thr))


def validation_indices(val: Dict[str, np.ndarray], n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed subset of validation pairs and, for each, a negative partner from another photo."""
    rng = np.random.default_rng([seed, 202])
    idx = np.sort(rng.permutation(len(val["a"]))[:n])
    img = val["image"][idx]
    partner = rng.permutation(len(idx))
    for _ in range(20):  # re-draw partners that come from the same photo
        bad = np.flatnonzero(img[partner] == img)
        if len(bad) == 0:
            break
        partner[bad] = rng.permutation(len(idx))[:len(bad)]
    return idx, partner


def same_photo_partners(val: Dict[str, np.ndarray], idx: np.ndarray, seed: int,
                        radius_per_scale: float = 4.0) -> np.ndarray:
    """For each validation pair ``idx[i]``, the position (in ``idx``) of another pair of the
    same photo whose point is not the same scene point (farther than ``radius_per_scale *
    max(scale)`` px in view A); -1 where there is none. Hard negatives: same content statistics."""
    rng = np.random.default_rng([seed, 303])
    img = val["image"][idx]
    k = val["kpt_a"][idx].astype(np.float64)
    out = np.full(len(idx), -1, dtype=np.int64)
    for photo in np.unique(img):
        members = np.flatnonzero(img == photo)
        for i in members:
            cand = rng.permutation(members)
            d = np.hypot(k[cand, 0] - k[i, 0], k[cand, 1] - k[i, 1])
            ok = cand[d > radius_per_scale * np.maximum(k[cand, 2], k[i, 2])]
            if len(ok):
                out[i] = ok[0]
    return out


def validate(model: HardNet, val: Dict[str, np.ndarray], idx: np.ndarray, partner: np.ndarray,
             device, block: int = 1000, partner_same: Optional[np.ndarray] = None) -> Dict[str, float]:
    """FPR95 (negatives from other photos; with ``partner_same`` also from the same photo)
    and NN accuracy of the validation pairs ``idx`` (see module doc)."""
    da = describe(model, val["a"][idx], device)
    db = describe(model, val["b"][idx], device)
    pos = (da - db).norm(dim=1).numpy()
    img = val["image"][idx]
    keep = img[partner] != img
    neg = (da - db[partner]).norm(dim=1).numpy()[keep]
    extra = {}
    if partner_same is not None:
        has = partner_same >= 0
        neg_same = (da[has] - db[partner_same[has]]).norm(dim=1).numpy()
        extra["fpr95_same_photo"] = fpr_at_95(pos, neg_same)
    correct, total = 0, 0
    for i in range(0, len(idx), block):
        a, b = da[i:i + block], db[i:i + block]
        if len(a) < 2:
            continue
        correct += int((torch.cdist(a, b).argmin(1) == torch.arange(len(a))).sum())
        total += len(a)
    return {"fpr95": fpr_at_95(pos, neg), "nn_acc": correct / max(total, 1),
            "pos_dist": float(pos.mean()), "neg_dist": float(neg.mean()) if len(neg) else float("nan"), **extra}




# --------------------------------------------------------------------------- the task
class HardNetTask(PatchPairTask):
    """HardNet on patch pairs, for :func:`keynet.base.training.fit`."""

    metric = "fpr95"
    maximise = False
    order_salt = 101
    checkpoint_io = (save_hardnet, load_hardnet_checkpoint)

    def __init__(self, cfg: Any, keypoint_fn: Optional[KeypointFn] = None) -> None:
        super().__init__(cfg, keypoint_fn)
        if cfg.net.select_metric not in ("fpr95", "real_score"):
            raise ValueError(f"select_metric must be fpr95 or real_score, got {cfg.net.select_metric!r}")
        if cfg.net.select_metric == "real_score" and not cfg.net.real_val:
            raise ValueError("select_metric real_score needs a real validation set (--real-val)")
        self.metric = cfg.net.select_metric
        self.maximise = self.metric == "real_score"
        self.real_val: List[Dict[str, Any]] = []
        self.extra_val: List[Tuple[str, Dict[str, np.ndarray], np.ndarray, np.ndarray]] = []

    def build_model(self) -> nn.Module:
        model = HardNet(dropout=self.cfg.net.dropout)
        init_weights(model, self.cfg.net.init_gain)
        if self.cfg.init_weights:
            start, _ = load_hardnet(self.cfg.init_weights)
            model.load_state_dict(start.state_dict())
        return model

    def prepare_data(self, main: bool) -> Dict[str, Any]:
        cfg = self.cfg
        if cfg.init_weights and not Path(cfg.init_weights).is_file():  # before any run folder exists
            raise HardNetWeightsError(f"HardNet weights not found: {cfg.init_weights} (--init-weights)")
        info = self.load_patch_pairs(main)
        seed = cfg.loop.seed
        self.val_idx, self.val_partner = validation_indices(self.val_set, cfg.net.val_pairs, seed)
        radius = cfg.net.ignore_radius if cfg.net.ignore_radius > 0 else 4.0
        self.val_same = same_photo_partners(self.val_set, self.val_idx, seed, radius)
        for name, val in self.extra_val_sets.items():
            if len(val["a"]) >= 2:
                idx, partner = validation_indices(val, cfg.net.val_pairs, seed)
                self.extra_val.append((name, val, idx, partner))
        if cfg.net.real_val:
            self.real_val = load_eval_set(cfg.net.real_val)
            info["real_val"] = {"dir": cfg.net.real_val, "pairs": len(self.real_val)}
        return info

    def batches(self, indices: np.ndarray, batch_size: int, device: torch.device, workers: int) -> Iterable[Any]:
        tr = self.train_set
        for i in range(0, len(indices), batch_size):
            bi = indices[i:i + batch_size]
            ignore = None
            if self.cfg.net.ignore_radius > 0:
                ka = torch.from_numpy(tr["kpt_a"][bi])
                ignore = same_point_mask(torch.from_numpy(tr["image"][bi]), ka[:, :2], ka[:, 2],
                                         self.cfg.net.ignore_radius).to(device)
            yield to_tensor(tr["a"][bi], device), to_tensor(tr["b"][bi], device), ignore

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        a, b, ignore = batch
        if self.cfg.net.fliprot:
            a, b = fliprot(a, b, generator)
        n = self.cfg.net
        return hardnet_loss(model(a), model(b), margin=n.margin, anchor_swap=n.anchor_swap, ignore=ignore)

    def validate(self, model: nn.Module, device: torch.device, progress: bool) -> Dict[str, float]:
        was = model.training
        v = validate(model, self.val_set, self.val_idx, self.val_partner, device, self.cfg.net.val_block,
                     self.val_same)
        for name, val, idx, partner in self.extra_val:
            extra = validate(model, val, idx, partner, device, self.cfg.net.val_block)
            v.update({f"{name}_fpr95": extra["fpr95"], f"{name}_nn_acc": extra["nn_acc"]})
        if self.real_val:
            real = summarise(evaluate(self.real_val, network_describer(model, device)))
            v.update({("real_score" if k == "score" else f"real_{k}"): x for k, x in real.items()})
        model.train(was)
        return v


def train(cfg: TrainConfig, keypoint_fn: Optional[KeypointFn] = None) -> Dict[str, Any]:
    """Train (or resume) HardNet; returns the summary of :func:`keynet.base.training.fit`.
    ``keypoint_fn``: the detector when ``cfg.data.detector == 'keynet'``."""
    return fit(HardNetTask(cfg, keypoint_fn), cfg.loop, cfg.out_dir, resume=cfg.resume, command=cfg.command)


def export_weights(src, dst, **metadata) -> dict:
    """Write the model of checkpoint ``src`` to ``dst`` in the project format without the
    optimiser state (the shipped file), keeping the training metadata plus ``metadata``."""
    return export_checkpoint(src, dst, load_hardnet_checkpoint, save_hardnet, **metadata)
