"""Training HardNet on cached patch pairs (``hardnet.data``): loop, schedule, validation,
checkpoints and resume.

* Every epoch draws ``pairs_per_epoch`` training pairs from seeded passes over the
  training set (pass k is permutation k of all pairs), so a run resumed from the
  checkpoint of epoch e continues exactly as if it had not stopped (the dropout / augment
  generator is reseeded at each epoch start as well).
* Learning rate: linear decay to 0 over all steps (HardNet paper) or constant.
* Validation on the held-out pairs (photos disjoint from training) after every epoch
  (and before the first): FPR95 (false positive rate at 95% recall, negatives = each
  anchor with the positive of another photo; and, harder, with the positive of another
  point of the same photo) and NN accuracy (share of anchors whose
  nearest positive among ``val_block`` candidates is their own).
* ``<out>/last.pt`` (with optimizer state, for resume) and ``<out>/best.pt`` (lowest
  FPR95) are written atomically after every epoch in the project HardNet format;
  ``history.csv`` and ``curves.png`` are updated alongside.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .data import load_split, read_manifest
from .loss import hardnet_loss, same_point_mask
from .model import HardNet
from .weights import load_hardnet_checkpoint, save_hardnet

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 6
    pairs_per_epoch: int = 40960
    batch_size: int = 256
    optimizer: str = "adam"          # 'adam' or 'sgd' (paper: sgd)
    lr: float = 1e-3                 # paper: 10 with sgd (dampening 0.9 -> effective 1)
    momentum: float = 0.9
    dampening: float = 0.9           # sgd only; official code's value
    weight_decay: float = 1e-4
    schedule: str = "linear"         # 'linear' (to 0 over all steps, paper) or 'constant'
    margin: float = 1.0
    anchor_swap: bool = True
    dropout: float = 0.3
    init_gain: float = 0.6           # orthogonal init of the conv weights (official code)
    ignore_radius: float = 4.0       # same-photo negatives closer than this * scale are ignored
    fliprot: bool = False            # random flip / 90-degree rotation of both patches of a pair
    val_pairs: int = 3000
    val_block: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule must be 'linear' or 'constant', got {self.schedule!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (in-batch negatives)")
        if self.epochs < 1 or self.pairs_per_epoch < self.batch_size:
            raise ValueError("need epochs >= 1 and pairs_per_epoch >= batch_size")

    @property
    def steps_per_epoch(self) -> int:
        return self.pairs_per_epoch // self.batch_size


PAPER_DEFAULTS = dict(optimizer="sgd", lr=10.0, momentum=0.9, dampening=0.9, weight_decay=1e-4,
                      batch_size=1024, schedule="linear", margin=1.0, anchor_swap=True, dropout=0.3)


# --------------------------------------------------------------------------- pieces

def init_weights(model: nn.Module, gain: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               dampening=cfg.dampening, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, 1.0 - step / max(total, 1))


def epoch_indices(n: int, per_epoch: int, epoch: int, seed: int) -> np.ndarray:
    """Indices of epoch ``epoch``: slice ``[epoch * per_epoch, (epoch + 1) * per_epoch)`` of the
    concatenation of seeded permutations of ``range(n)``."""
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    out = []
    for k in range(start // n, (stop - 1) // n + 1):
        perm = np.random.default_rng([seed, 101, k]).permutation(n)
        lo, hi = max(start - k * n, 0), min(stop - k * n, n)
        out.append(perm[lo:hi])
    return np.concatenate(out)


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


def train_step(model: HardNet, optimizer: torch.optim.Optimizer, a: torch.Tensor, b: torch.Tensor,
               cfg: TrainConfig, ignore: Optional[torch.Tensor] = None) -> float:
    model.train()
    loss = hardnet_loss(model(a), model(b), margin=cfg.margin, anchor_swap=cfg.anchor_swap, ignore=ignore)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- logs

def write_history(out_dir: Path, history: List[dict]) -> None:
    if not history:
        return
    keys = list(history[0].keys())
    for h in history:
        keys += [k for k in h if k not in keys]
    tmp = out_dir / "history.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    tmp.replace(out_dir / "history.csv")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        ep = [h["epoch"] for h in history]
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
        tr = [(h["epoch"], h["train_loss"]) for h in history if h.get("train_loss") == h.get("train_loss")
              and h.get("train_loss") is not None]
        if tr:
            ax[0].plot(*zip(*tr), "o-")
        ax[0].set_title("train loss (epoch mean)")
        ax[1].plot(ep, [h["val_fpr95"] for h in history], "o-", label="negatives: other photos")
        same = [(h["epoch"], h["val_fpr95_same_photo"]) for h in history if "val_fpr95_same_photo" in h]
        if same:
            ax[1].plot(*zip(*same), "s-", label="negatives: same photo")
        ax[1].legend()
        ax[1].set_title("val FPR95 (lower is better)")
        ax[2].plot(ep, [h["val_nn_acc"] for h in history], "o-")
        ax[2].set_title("val NN accuracy")
        for x in ax:
            x.set_xlabel("epoch")
            x.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png.tmp.png", dpi=90)
        plt.close(fig)
        (out_dir / "curves.png.tmp.png").replace(out_dir / "curves.png")
    except Exception as e:  # noqa: BLE001 - a plot must never stop training
        log.warning("could not draw curves: %s", e)


# --------------------------------------------------------------------------- loop

def train(dataset_dir, out_dir, cfg: TrainConfig, resume: bool = False, device: Optional[str] = None,
          progress: bool = True, max_steps: int = 0) -> List[dict]:
    """Train (or resume) HardNet on the pairs in ``dataset_dir``; returns the history.

    ``max_steps`` > 0 stops after that many optimisation steps in total (tests, smoke runs).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_set = load_split(dataset_dir, "train")
    val_set = load_split(dataset_dir, "val")
    manifest = read_manifest(dataset_dir)
    n_train = len(train_set["a"])
    if n_train < cfg.batch_size:
        raise ValueError(f"{dataset_dir}: {n_train} training pairs, fewer than one batch ({cfg.batch_size})")
    val_idx, val_partner = validation_indices(val_set, cfg.val_pairs, cfg.seed)
    val_same = same_photo_partners(val_set, val_idx, cfg.seed, cfg.ignore_radius if cfg.ignore_radius > 0 else 4.0)

    torch.manual_seed(cfg.seed)
    model = HardNet(dropout=cfg.dropout)
    init_weights(model, cfg.init_gain)
    model.to(dev)
    optimizer = make_optimizer(model, cfg)
    history: List[dict] = []
    start_epoch = 0
    last = out_dir / "last.pt"
    if resume and last.is_file():
        loaded, meta, extra = load_hardnet_checkpoint(last, dev)
        saved = extra.get("train_config", {})
        if saved and saved != dataclasses.asdict(cfg):
            diff = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items() if saved.get(k) != v}
            log.warning("resuming with a different configuration (saved, now): %s", diff)
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(extra["optimizer"])
        start_epoch = int(extra["epoch"])
        history = list(extra.get("history", []))
        log.info("resumed from %s at epoch %d", last, start_epoch)
    elif resume:
        log.info("no checkpoint at %s: starting from scratch", last)

    total_steps = cfg.epochs * cfg.steps_per_epoch
    meta_base = {"train_config": dataclasses.asdict(cfg), "dataset": str(dataset_dir),
                 "dataset_params": manifest.get("params"), "dataset_source": manifest.get("source"),
                 "dataset_counts": manifest.get("counts"), "device": str(dev)}
    if not history:
        t0 = time.time()
        v = validate(model, val_set, val_idx, val_partner, dev, cfg.val_block, val_same)
        history.append({"epoch": 0, "step": 0, "train_loss": float("nan"), "val_fpr95": v["fpr95"],
                        "val_fpr95_same_photo": v["fpr95_same_photo"],
                        "val_nn_acc": v["nn_acc"], "val_pos_dist": v["pos_dist"], "val_neg_dist": v["neg_dist"],
                        "lr": cfg.lr, "epoch_seconds": 0.0, "val_seconds": time.time() - t0})
        log.info("epoch 0 (untrained): val FPR95 %.4f, NN acc %.4f", v["fpr95"], v["nn_acc"])
        write_history(out_dir, history)
    best = min((h["val_fpr95"] for h in history if h["epoch"] > 0), default=float("inf"))
    step = start_epoch * cfg.steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        torch.manual_seed(cfg.seed * 100003 + epoch)
        idx = epoch_indices(n_train, cfg.pairs_per_epoch, epoch, cfg.seed)
        losses = []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not progress, mininterval=5.0)
        for s in bar:
            bi = idx[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            a, b = to_tensor(train_set["a"][bi], dev), to_tensor(train_set["b"][bi], dev)
            if cfg.fliprot:
                a, b = fliprot(a, b, gen)
            ignore = None
            if cfg.ignore_radius > 0:
                ka = torch.from_numpy(train_set["kpt_a"][bi])
                ignore = same_point_mask(torch.from_numpy(train_set["image"][bi]), ka[:, :2], ka[:, 2],
                                         cfg.ignore_radius)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total_steps, cfg)
            loss = train_step(model, optimizer, a, b, cfg, ignore)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at epoch {epoch + 1}, step {s}: stopping")
            losses.append(loss)
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if max_steps and step >= max_steps:
                break
        bar.close()
        train_seconds = time.time() - t0
        t1 = time.time()
        v = validate(model, val_set, val_idx, val_partner, dev, cfg.val_block, val_same)
        history.append({"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)),
                        "val_fpr95": v["fpr95"], "val_fpr95_same_photo": v["fpr95_same_photo"],
                        "val_nn_acc": v["nn_acc"], "val_pos_dist": v["pos_dist"],
                        "val_neg_dist": v["neg_dist"], "lr": optimizer.param_groups[0]["lr"],
                        "epoch_seconds": train_seconds, "val_seconds": time.time() - t1})
        log.info("epoch %d/%d: loss %.4f, val FPR95 %.4f, NN acc %.4f (%.0f s + %.0f s val)", epoch + 1,
                 cfg.epochs, history[-1]["train_loss"], v["fpr95"], v["nn_acc"], train_seconds, time.time() - t1)
        meta = dict(meta_base, epoch=epoch + 1, step=step, val_fpr95=v["fpr95"], val_nn_acc=v["nn_acc"],
                    train_seconds_total=float(sum(h["epoch_seconds"] for h in history)))
        extra = {"optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": history,
                 "train_config": dataclasses.asdict(cfg)}
        save_hardnet(last, model, meta, extra)
        if v["fpr95"] <= best or not (out_dir / "best.pt").is_file():
            best = v["fpr95"] if math.isfinite(v["fpr95"]) else best
            save_hardnet(out_dir / "best.pt", model, meta)
        write_history(out_dir, history)
        if max_steps and step >= max_steps:
            break
    return history


def export_weights(src, dst, **metadata) -> dict:
    """Write the model of checkpoint ``src`` to ``dst`` in the project format without the
    optimiser state (the shipped file), keeping the training metadata plus ``metadata``."""
    model, meta, _ = load_hardnet_checkpoint(src, "cpu")
    meta.pop("path", None)
    meta.update(metadata, exported_from=str(src))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_hardnet(dst, model, meta)
    return meta
