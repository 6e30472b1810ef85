"""Training Key.Net on synthetic pairs with the M-SIP loss (the official recipe by default).

Entry point: :func:`train` with a :class:`TrainConfig` (``train.py`` builds it from the
command line). What it does:

* generates or reuses the cached synthetic pairs (:mod:`keynet.data`), rank 0 only;
* Adam (lr 1e-3), staircase decay x0.7 every 10 epochs counted in steps as the TF code
  (``decay_steps = int(10 * pairs_per_epoch / batch)``), no weight decay by default;
* each step runs the network on the source and destination batches separately (so
  batch-norm statistics are per view, as the two TF graph calls) and minimises M-SIP;
* validation repeatability every ``val_every`` epochs on the validation pairs (NMS 15,
  common-region masks, top 25 points, single-scale repeatability at overlap 0.6);
* keeps ``best.pt`` (project format, small) and ``last.pt`` (with optimiser, schedule,
  RNG and history for ``--resume``), both written atomically after each epoch;
* early stopping as the official loop: a validation that does not improve the best
  repeatability while the epoch loss does not improve the best loss counts one strike;
  more than ``patience`` strikes stop the run;
* ``history.csv`` (one row per epoch) and ``curves.png``;
* a non-finite loss stops the run with :class:`TrainingDiverged`, leaving the last
  good checkpoint in place;
* several processes under ``torchrun`` use DistributedDataParallel (gloo on CPU, nccl on
  CUDA); each rank takes its share of every global batch.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as kdata
from .loss import MSIP_FACTORS, MSIP_SIZES, MSIPConfig, msip_loss
from .model import KeyNet, KeyNetConfig

log = logging.getLogger("keynet.training")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------- config

@dataclass
class TrainConfig:
    # data
    data_dir: str = "../shared/data/imagenet-sample"
    dataset_dir: str = "datasets/keynet_synth"
    out_dir: str = "runs/keynet"
    max_angle: float = 45.0
    max_scale: float = 2.0
    max_shearing: float = 0.8
    patch_size: int = 192
    val_patch_size: int = 384
    num_train: int = 4001
    num_val: int = 1501
    val_images: int = 150
    pairs_per_image: int = 5
    photometric: bool = True
    gen_workers: int = 2
    data_seed: int = 12345           # seeds the pair generation and the train/val photo split
    # model
    variant: str = "tf"
    num_filters: int = 8
    num_blocks: int = 3
    num_levels: int = 3
    factor: float = 1.2
    kernel_size: int = 5
    init: str = "tf"                 # 'tf' (variance scaling, truncated normal) or 'torch'
    handcrafted: bool = True         # False: learnable blocks on the image itself (ablation)
    # optimisation
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.7
    decay_epochs: float = 10.0
    weight_decay: float = 0.0
    pairs_per_epoch: int = 0         # 0: every training pair once per epoch
    max_steps: int = 0               # 0: no limit (for smoke tests)
    # loss
    msip_sizes: Tuple[int, ...] = MSIP_SIZES
    msip_factors: Tuple[float, ...] = MSIP_FACTORS
    softmax_scope: str = "image"
    coordinate_weighting: bool = True
    # validation / early stopping
    val_every: int = 3
    val_pairs: int = 0               # 0: all validation pairs
    val_batch: int = 4
    nms_size: int = 15
    num_points: int = 25
    overlap: float = 0.6
    val_relu: bool = False           # the official validation scores the raw output
    val_last: bool = True            # also validate after the final epoch
    patience: int = 3
    # run
    seed: int = 12345
    resume: Optional[str] = None
    device: str = "auto"
    workers: int = 2
    progress: bool = True
    command: str = ""

    def model_config(self) -> KeyNetConfig:
        return KeyNetConfig(num_filters=self.num_filters, num_blocks=self.num_blocks, num_levels=self.num_levels,
                            factor=self.factor, kernel_size=self.kernel_size, variant=self.variant,
                            handcrafted=self.handcrafted)

    def pair_config(self) -> kdata.PairConfig:
        return kdata.PairConfig(max_angle=self.max_angle, max_scale=self.max_scale, max_shearing=self.max_shearing,
                                patch_size=self.patch_size, val_patch_size=self.val_patch_size,
                                num_train=self.num_train, num_val=self.num_val, val_images=self.val_images,
                                pairs_per_image=self.pairs_per_image, photometric=self.photometric, seed=self.data_seed)

    def msip_config(self) -> MSIPConfig:
        return MSIPConfig(sizes=tuple(self.msip_sizes), factors=tuple(self.msip_factors),
                          softmax_scope=self.softmax_scope, coordinate_weighting=self.coordinate_weighting)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["msip_sizes"] = list(self.msip_sizes)
        d["msip_factors"] = list(self.msip_factors)
        return d


# --------------------------------------------------------------------------- helpers

def init_tf_(model: nn.Module, seed: Optional[int] = None) -> None:
    """TF ``variance_scaling_initializer()`` defaults: truncated normal (2 std), std
    sqrt(1.3 * 2 / fan_in); zero biases; batch norm gamma 1, beta 0."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            std = math.sqrt(1.3 * 2.0 / fan_in)
            with torch.no_grad():
                w = torch.empty(m.weight.shape)
                nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=g)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: float) -> float:
    """Staircase exponential decay (TF ``exponential_decay(staircase=True)``)."""
    decay_steps = max(1, int(cfg.decay_epochs * steps_per_epoch))
    return cfg.lr * cfg.lr_decay ** (step // decay_steps)


def epoch_indices(n: int, epoch: int, per_epoch: int, seed: int) -> np.ndarray:
    """Training pair order of ``epoch``: a stream of seeded permutations of ``range(n)``,
    cut into consecutive chunks of ``per_epoch`` (so a short epoch still walks all pairs)."""
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    out = []
    cycle = start // n
    pos = start
    while pos < stop:
        perm = np.random.default_rng([seed, 1000 + cycle]).permutation(n)
        lo = pos - cycle * n
        hi = min(n, stop - cycle * n)
        out.append(perm[lo:hi])
        pos += hi - lo
        cycle += 1
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    def setup(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            x = x.clone()
            torch.distributed.all_reduce(x)
            x /= self.world
        return x

    def broadcast_flag(self, flag: bool, device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item() > 0.5)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _collate(items):
    return tuple(torch.stack(x) for x in zip(*items))


# --------------------------------------------------------------------------- validation

@torch.no_grad()
def validate(model: nn.Module, dataset, device: torch.device, nms_size: int = 15, num_points: int = 25,
             overlap: float = 0.6, relu: bool = False, batch: int = 4, max_pairs: int = 0,
             progress: bool = False) -> Dict[str, float]:
    """Official validation repeatability over synthetic pairs (mean over pairs, percent).

    Per pair: raw score maps (ReLU only with ``relu``), NMS ``nms_size``, multiplied by
    the common-region masks (15 px border, 0.75 threshold), the top ``num_points`` of
    each map (scale 1), destination points mapped to the source frame, repeatability
    at IoU ``overlap``.
    """
    from .benchmark.repeatability import compute_repeatability
    from .detection import nms, select_points
    from kpcore.geometry import common_region_masks, warp_points

    was_training = model.training
    model.eval()
    n = len(dataset) if not max_pairs else min(max_pairs, len(dataset))
    reps_s, reps_m = [], []
    it = range(0, n, batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="validation", leave=False, total=math.ceil(n / batch))
    for b0 in it:
        items = [dataset[i] for i in range(b0, min(n, b0 + batch))]
        src, dst, _h_s2d, h_d2s = _collate(items)
        out_s = model(src.to(device))
        out_d = model(dst.to(device))
        if relu:
            out_s, out_d = F.relu(out_s), F.relu(out_d)
        out_s = out_s[:, 0].float().cpu().numpy()
        out_d = out_d[:, 0].float().cpu().numpy()
        for i in range(len(items)):
            hom = h_d2s[i].double().numpy()
            s = nms(out_s[i], nms_size)
            d = nms(out_d[i], nms_size)
            m_s, m_d = common_region_masks(hom, s.shape, d.shape)
            s = s * m_s
            d = d * m_d
            pts = []
            for sc in (s, d):
                rc = select_points(sc, num_points)
                pts.append(np.stack([rc[:, 1], rc[:, 0], np.ones(len(rc)), sc[rc[:, 0], rc[:, 1]]], 1).astype(np.float64))
            dst_in_src = warp_points(pts[1], hom)
            r = compute_repeatability(pts[0], dst_in_src, overlap=overlap)
            reps_s.append(float(r["rep_single_scale"]))
            reps_m.append(float(r["rep_multi_scale"]))
    model.train(was_training)
    return {"rep_single_scale": float(np.mean(reps_s)) if reps_s else 0.0,
            "rep_multi_scale": float(np.mean(reps_m)) if reps_m else 0.0, "num_pairs": len(reps_s)}


# --------------------------------------------------------------------------- logs

HISTORY_FIELDS = ["epoch", "global_step", "pairs_seen", "lr", "loss", "rep_single_scale", "rep_multi_scale",
                  "best_rep", "epoch_time_s", "wall_time_s"]


def write_history(out_dir: Path, history: List[Dict[str, Any]]) -> None:
    from kpcore.files import atomic_write_bytes
    import io as _io
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    atomic_write_bytes(out_dir / "history.csv", buf.getvalue().encode())
    try:
        plot_curves(history, out_dir / "curves.png")
    except Exception as e:  # noqa: BLE001 - a plotting problem must not stop training
        log.warning("could not draw curves: %s", e)


def plot_curves(history: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [h["loss"] for h in history], "o-")
    ax[0].set_xlabel("epoch"); ax[0].set_ylabel("M-SIP loss (train, epoch mean)"); ax[0].grid(alpha=.3)
    vr = [(h["epoch"], h["rep_single_scale"]) for h in history if h.get("rep_single_scale") not in (None, "")]
    if vr:
        ax[1].plot([v[0] for v in vr], [v[1] for v in vr], "o-")
    ax[1].set_xlabel("epoch"); ax[1].set_ylabel("validation repeatability (%)"); ax[1].grid(alpha=.3)
    fig.tight_layout()
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, dpi=90)
    plt.close(fig)
    from kpcore.files import atomic_write_bytes
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- train

def _unwrap(model: nn.Module) -> KeyNet:
    return model.module if hasattr(model, "module") else model


def _metadata(cfg: TrainConfig, extra: Dict[str, Any]) -> Dict[str, Any]:
    meta = {"trained_with": "keynet.training", "train_config": cfg.to_dict(), "command": cfg.command,
            "seed": cfg.seed, "torch": str(torch.__version__), "python": platform.python_version()}
    meta.update(extra)
    return meta


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run (or resume) a training; returns a summary dict (best repeatability, paths,
    history, and the final ``parameters``)."""
    dist = _Dist()
    device = _pick_device(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    dist.setup(device)
    out_dir = Path(cfg.out_dir)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))

    # ---- data
    if dist.main:
        kdata.prepare_dataset(cfg.data_dir, cfg.dataset_dir, cfg.pair_config(), workers=cfg.gen_workers,
                              progress=cfg.progress)
    dist.barrier()
    manifest = kdata.read_manifest(cfg.dataset_dir)
    train_set = kdata.PairDataset(cfg.dataset_dir, "train")
    val_set = kdata.PairDataset(cfg.dataset_dir, "val")
    n_train = len(train_set)
    if n_train == 0:
        raise ValueError(f"no training pairs in {cfg.dataset_dir}")
    per_epoch = cfg.pairs_per_epoch or n_train
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch size {cfg.batch_size} is not a multiple of the {dist.world} processes")
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)

    # ---- model / optimiser
    model = KeyNet(cfg.model_config()).to(device)
    if cfg.init == "tf":
        init_tf_(model, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_gen = torch.Generator().manual_seed(cfg.seed + 7919 * dist.rank)
    state = {"epoch": 0, "global_step": 0, "pairs_seen": 0, "best_rep": -1.0, "best_epoch": -1,
             "loss_best": None, "strikes": 0, "history": [], "wall_time_s": 0.0}
    if cfg.resume:
        from .weights import load_checkpoint
        loaded, meta, extra = load_checkpoint(cfg.resume)
        if "train_state" not in extra:
            raise ValueError(f"{cfg.resume}: not a resumable training checkpoint (use the run's last.pt)")
        model.load_state_dict(loaded.state_dict())
        opt.load_state_dict(extra["optimizer"])
        loss_gen.set_state(extra["loss_generator"][dist.rank if dist.rank < len(extra["loss_generator"]) else 0])
        torch.set_rng_state(extra["torch_rng"])
        state.update(json.loads(extra["train_state"]))
        if dist.main:
            log.info("resumed from %s at epoch %d (step %d)", cfg.resume, state["epoch"], state["global_step"])
    msip_cfg = cfg.msip_config()
    ddp_model: nn.Module = model
    if dist.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    loader_kw = dict(batch_size=cfg.batch_size // dist.world, shuffle=False, num_workers=cfg.workers,
                     collate_fn=_collate, persistent_workers=False, drop_last=False)
    if cfg.workers > 0:
        loader_kw["prefetch_factor"] = 2

    if dist.main:
        log.info("training on %s (%d process%s): %d train pairs, %d val pairs, %d pairs/epoch, %d steps/epoch, "
                 "seed %d", device, dist.world, "es" if dist.world > 1 else "", n_train, len(val_set),
                 per_epoch, steps_per_epoch, cfg.seed)
        (out_dir / "config.json").write_text(json.dumps({"train_config": cfg.to_dict(), "manifest": manifest},
                                                        indent=2))

    def save(kind: str, rep: Optional[Dict[str, float]] = None):
        from .weights import save_checkpoint
        meta = _metadata(cfg, {"epoch": state["epoch"], "global_step": state["global_step"],
                               "pairs_seen": state["pairs_seen"], "data_counts": manifest.get("counts"),
                               "validation": rep, "best_rep": state["best_rep"],
                               "wall_time_s": state["wall_time_s"]})
        if kind == "best":
            save_checkpoint(out_dir / "best.pt", model, meta)
        else:
            gens = [loss_gen.get_state()]
            extra = {"optimizer": opt.state_dict(), "loss_generator": gens, "torch_rng": torch.get_rng_state(),
                     "train_state": json.dumps(state)}
            save_checkpoint(out_dir / "last.pt", model, meta, extra)

    stop = False
    t_run = time.time() - state["wall_time_s"]
    while state["epoch"] < cfg.epochs and not stop:
        epoch = state["epoch"]
        t0 = time.time()
        idx = epoch_indices(n_train, epoch, per_epoch, cfg.seed)
        # global batches of cfg.batch_size; each rank takes its interleaved share
        batches = [idx[i:i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
        mine = np.concatenate([b[dist.rank::dist.world] for b in batches]) if batches else idx
        sub = torch.utils.data.Subset(train_set, mine.tolist())
        loader = torch.utils.data.DataLoader(sub, **loader_kw)
        model.train()
        losses = []
        bar = loader
        if cfg.progress and dist.main:
            from tqdm import tqdm
            bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}", dynamic_ncols=True, mininterval=5)
        for src, dst, h_s2d, h_d2s in bar:
            if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                stop = True
                break
            lr = lr_at(state["global_step"], cfg, per_epoch / cfg.batch_size)
            for g in opt.param_groups:
                g["lr"] = lr
            src, dst = src.to(device, non_blocking=True), dst.to(device, non_blocking=True)
            h_s2d, h_d2s = h_s2d.to(device), h_d2s.to(device)
            out_s = ddp_model(src)
            out_d = ddp_model(dst)
            loss = msip_loss(out_s, out_d, h_s2d, h_d2s, msip_cfg, generator=loss_gen)
            loss_all = dist.mean(loss.detach())
            if not torch.isfinite(loss_all):
                msg = (f"the loss became {loss_all.item()} at epoch {epoch}, step {state['global_step']}: "
                       f"training stopped; the last good checkpoint is {out_dir / 'last.pt'} "
                       f"(resume from it with a lower --lr)")
                if dist.main:
                    log.error(msg)
                raise TrainingDiverged(msg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["global_step"] += 1
            state["pairs_seen"] += len(src) * dist.world
            losses.append(loss_all.item())
            if bar is not loader:
                bar.set_postfix(loss=f"{losses[-1]:.2f}", lr=f"{lr:.2e}")
        if not losses:
            break
        ep_loss = float(np.mean(losses))
        # ---- validation (rank 0), early stopping as the official loop
        last_epoch = (epoch + 1 >= cfg.epochs) or stop
        do_val = (epoch % cfg.val_every == 0) or (cfg.val_last and last_epoch)
        rep = None
        improved = False
        if dist.main and do_val and len(val_set):
            rep = validate(model, val_set, device, cfg.nms_size, cfg.num_points, cfg.overlap, cfg.val_relu,
                           cfg.val_batch, cfg.val_pairs, progress=cfg.progress)
            r = rep["rep_single_scale"]
            if r > state["best_rep"]:
                state["best_rep"], state["best_epoch"], state["strikes"] = r, epoch, 0
                improved = True
            elif state["loss_best"] is not None and ep_loss < state["loss_best"]:
                pass
            else:
                state["strikes"] += 1
        if state["loss_best"] is None or (rep is not None and not improved and ep_loss < state["loss_best"]):
            state["loss_best"] = ep_loss
        state["epoch"] = epoch + 1
        state["wall_time_s"] = time.time() - t_run
        row = {"epoch": epoch, "global_step": state["global_step"], "pairs_seen": state["pairs_seen"],
               "lr": lr_at(state["global_step"] - 1, cfg, per_epoch / cfg.batch_size), "loss": ep_loss,
               "rep_single_scale": rep["rep_single_scale"] if rep else None,
               "rep_multi_scale": rep["rep_multi_scale"] if rep else None,
               "best_rep": state["best_rep"], "epoch_time_s": time.time() - t0, "wall_time_s": state["wall_time_s"]}
        state["history"].append(row)
        if dist.main:
            if improved:
                save("best", rep)
            save("last", rep)
            write_history(out_dir, state["history"])
            log.info("epoch %d: loss %.4f, lr %.2e%s, %.0f s", epoch, ep_loss, row["lr"],
                     f", val rep {rep['rep_single_scale']:.2f} (best {state['best_rep']:.2f} @ {state['best_epoch']})"
                     if rep else "", row["epoch_time_s"])
        if state["strikes"] > cfg.patience:
            if dist.main:
                log.info("early stopping: %d validations without improvement", state["strikes"])
            stop = True
        stop = dist.broadcast_flag(stop, device)
    dist.barrier()
    summary = {"best_rep": state["best_rep"], "best_epoch": state["best_epoch"], "epochs_done": state["epoch"],
               "global_step": state["global_step"], "pairs_seen": state["pairs_seen"],
               "wall_time_s": state["wall_time_s"], "out_dir": str(out_dir),
               "best": str(out_dir / "best.pt"), "last": str(out_dir / "last.pt"), "history": state["history"],
               "parameters": {k: v.detach().cpu().clone() for k, v in model.named_parameters()}}
    if dist.enabled:
        torch.distributed.destroy_process_group()
    return summary
