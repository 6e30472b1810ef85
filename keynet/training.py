"""Training Key.Net on synthetic pairs with the M-SIP loss (the official recipe by default).

:class:`TrainConfig` gathers the configuration of every part, each declared once where it
belongs (the network :class:`~keynet.model.KeyNetConfig`, the pair generator
:class:`~keynet.data.PairConfig`, the loss :class:`~keynet.loss.MSIPConfig`, the validation
:class:`ValConfig` and the loop :class:`~keynet.base.training.LoopConfig`); ``train.py`` generates
its options from them. :class:`KeyNetTask` is what Key.Net brings to the project's one
training skeleton (:func:`keynet.base.training.fit`): the pairs (generated or reused,
:mod:`keynet.data`), TF's initialisation, a step that runs the network on the source and
destination batches separately (so batch-norm statistics are per view, as the two TF graph
calls) and minimises M-SIP, the official validation repeatability, and the project
checkpoint format. Defaults follow the official ``train_network.py``: Adam 1e-3 with a
staircase x0.7 every 10 epochs, batch 32, validation every 3 epochs, early stopping after
more than 3 strikes.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from HSequences_bench.evaluate import BenchConfig, evaluate_pair
from HSequences_bench.hsequences import ImagePair
from HSequences_bench.repeatability import compute_repeatability
from keynet.base.geometry import common_region_masks, warp_points
from keynet.base.training import LoopConfig, Task, TrainingDiverged, fit

from . import data as kdata
from .detection import DetectorSettings, KeyNetDetector, nms_top_points, setting
from .engine import KeyNetEngine
from .loss import MSIPConfig, msip_loss
from .model import KeyNet, KeyNetConfig
from .weights import load_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "ValConfig", "KeyNetTask", "TrainingDiverged", "train", "validate", "init_tf_",
           "VAL_BORDER", "VAL_MASK_THRESHOLD"]

#: Official validation constants (``check_val_rep``): the common-region masks drop a 15 px
#: border and keep warped-ones >= 0.75.
VAL_BORDER = 15
VAL_MASK_THRESHOLD = 0.75


@dataclass
class ValConfig:
    """The validation repeatability (the official ``check_val_rep``)."""

    pairs: int = field(default=0, metadata={"flags": ("--val-pairs",), "help": "validation pairs used (0: all)"})
    batch: int = field(default=4, metadata={"flags": ("--val-batch",), "help": "validation batch"})
    # the detector's own settings (DetectorSettings' declaration), with validation's defaults
    nms_size: int = setting("nms_size", 15, help="NMS window (px) of the validation's detection")
    num_points: int = setting("num_points", 25, help="points per view (the best by score) of the validation")
    overlap: float = field(default=0.6, metadata={"flags": ("--overlap",), "help": "IoU for a repeated point"})
    relu: bool = field(default=False, metadata={"flags": ("--val-relu",),
                                                "help": "score the ReLU of the output (the reproduction)"})
    protocol: str = field(default="official", metadata={
        "flags": ("--val-protocol",), "choices": ("official", "benchmark"),
        "help": "official: the TF check_val_rep (top --num-points of one scale); benchmark: the multi-scale "
                "detector and the HSequences pair evaluation on the validation pairs (validate_benchmark)"})
    top_k: int = field(default=250, metadata={
        "flags": ("--val-top-k",), "help": "benchmark protocol: points per view (the official 1000 per "
                                           "HPatches image, scaled to the area of a 384 px view)"})


def _keynet_loop() -> LoopConfig:
    return LoopConfig(epochs=25, batch_size=32, pairs_per_epoch=0, optimizer="adam", lr=1e-3, weight_decay=0.0,
                      schedule="staircase", lr_decay=0.7, decay_epochs=10.0, val_every=3, val_last=True,
                      patience=3, seed=12345, workers=2)


@dataclass
class TrainConfig:
    """Everything a Key.Net training run needs."""

    data_dir: str = field(default="", metadata={
        "flags": ("--image-dir", "--data-dir"), "nargs": "+", "required": True,
        "help": "folder(s) of photos the synthetic pairs are made from (several: their union; any folder of "
                "photos, e.g. ImageNet); --data-dir is the official TF script's name of this option"})
    dataset_dir: str = field(default="datasets/keynet_synth", metadata={
        "help": "cache of the generated pairs (.npy + manifest)"})
    out_dir: str = field(default="runs/keynet", metadata={"help": "run folder: checkpoints, history.csv, curves.png"})
    gen_workers: int = field(default=2, metadata={"help": "processes generating pairs"})
    init: str = field(default="tf", metadata={"choices": ("tf", "torch"), "help": "weight initialisation"})
    resume: Optional[str] = field(default=None, metadata={
        "nargs": "?", "const": "auto", "help": "continue a run: a last.pt, or no value for <out-dir>/last.pt"})
    data: kdata.PairConfig = field(default_factory=kdata.PairConfig, metadata={"group": "synthetic pairs"})
    model: KeyNetConfig = field(default_factory=KeyNetConfig, metadata={"group": "network"})
    loss: MSIPConfig = field(default_factory=MSIPConfig, metadata={"group": "M-SIP loss"})
    val: ValConfig = field(default_factory=ValConfig, metadata={"group": "validation"})
    loop: LoopConfig = field(default_factory=_keynet_loop, metadata={"group": "optimisation and run"})
    command: str = field(default="", metadata={"cli": False})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- pieces
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


def _collate(items):
    return tuple(torch.stack(x) for x in zip(*items))


@torch.no_grad()
def validate(model: nn.Module, dataset, device: torch.device, nms_size: int = 15, num_points: int = 25,
             overlap: float = 0.6, relu: bool = False, batch: int = 4, max_pairs: int = 0,
             progress: bool = False) -> Dict[str, float]:
    """Official validation repeatability over synthetic pairs (mean over pairs, percent).

    Per pair: raw score maps (ReLU only with ``relu``), NMS ``nms_size``, multiplied by the
    common-region masks (:data:`VAL_BORDER`, :data:`VAL_MASK_THRESHOLD`), the top
    ``num_points`` of each map (scale 1), destination points mapped to the source frame,
    repeatability at IoU ``overlap``.
    """
    was_training = model.training
    model.eval()
    net = KeyNetEngine(model) if isinstance(model, KeyNet) else model  # the inference engine
    n = len(dataset) if not max_pairs else min(max_pairs, len(dataset))
    reps_s, reps_m = [], []
    for b0 in tqdm(range(0, n, batch), desc="validation", leave=False, total=math.ceil(n / batch),
                   disable=not progress):
        items = [dataset[i] for i in range(b0, min(n, b0 + batch))]
        src, dst, _h_s2d, h_d2s = _collate(items)
        out_s, out_d = net(src.to(device)), net(dst.to(device))
        if relu:
            out_s, out_d = F.relu(out_s), F.relu(out_d)
        out_s = out_s[:, 0].float().cpu().numpy()
        out_d = out_d[:, 0].float().cpu().numpy()
        for i in range(len(items)):
            hom = h_d2s[i].double().numpy()
            m_s, m_d = common_region_masks(hom, out_s[i].shape, out_d[i].shape, border=VAL_BORDER,
                                           threshold=VAL_MASK_THRESHOLD)
            pts = []
            for score, mask in ((out_s[i], m_s), (out_d[i], m_d)):
                rc, vals = nms_top_points(score, nms_size, num_points, mask)
                pts.append(np.stack([rc[:, 1], rc[:, 0], np.ones(len(rc)), vals], 1).astype(np.float64))
            r = compute_repeatability(pts[0], warp_points(pts[1], hom), overlap=overlap)
            reps_s.append(float(r["rep_single_scale"]))
            reps_m.append(float(r["rep_multi_scale"]))
    model.train(was_training)
    return {"rep_single_scale": float(np.mean(reps_s)) if reps_s else 0.0,
            "rep_multi_scale": float(np.mean(reps_m)) if reps_m else 0.0, "num_pairs": len(reps_s)}


def validate_benchmark(model: nn.Module, dataset, device: torch.device, top_k: int = 250, max_pairs: int = 0,
                       progress: bool = False) -> Dict[str, float]:
    """The test protocol on the validation pairs (mean over pairs, percent): both views
    through the multi-scale detector (the official extraction settings, ``1.5 * top_k``
    points), then the HSequences pair evaluation (:func:`HSequences_bench.evaluate.evaluate_pair`:
    common region, the ``top_k`` best, circle-overlap repeatability at IoU 0.6). Metric
    keys: ``bench_rep`` (single scale) and ``bench_rep_multi``."""
    was_training = model.training
    model.eval()
    det = KeyNetDetector(model, DetectorSettings(num_points=int(round(1.5 * top_k))), device=device)
    cfg = BenchConfig(top_k=top_k)
    n = len(dataset) if not max_pairs else min(max_pairs, len(dataset))
    single, multi = [], []
    for i in tqdm(range(n), desc="validation (benchmark protocol)", leave=False, disable=not progress):
        src, dst, h_s2d, h_d2s = dataset[i]
        ks = det.detect(src[0].numpy())
        kd = det.detect(dst[0].numpy())
        pair = ImagePair("val", i, tuple(src.shape[-2:]), tuple(dst.shape[-2:]), h_s2d.double().numpy(),
                         h_d2s.double().numpy())
        rec = evaluate_pair(ks, kd, pair, cfg)
        single.append(float(rec["rep_single_scale"]))
        multi.append(float(rec["rep_multi_scale"]))
    model.train(was_training)
    return {"bench_rep": float(np.mean(single)) if single else 0.0,
            "bench_rep_multi": float(np.mean(multi)) if multi else 0.0, "num_pairs": len(single)}


# --------------------------------------------------------------------------- the task
class KeyNetTask(Task):
    """Key.Net on synthetic pairs with M-SIP, for :func:`keynet.base.training.fit`."""

    metric = "rep_single_scale"
    maximise = True

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.val.protocol == "benchmark":
            self.metric = "bench_rep"
        self.train_set: Optional[kdata.PairDataset] = None
        self.val_set: Optional[kdata.PairDataset] = None

    def build_model(self) -> nn.Module:
        model = KeyNet(self.cfg.model)
        if self.cfg.init == "tf":
            init_tf_(model, self.cfg.loop.seed)
        return model

    def prepare_data(self, main: bool) -> Dict[str, Any]:
        cfg = self.cfg
        if main:
            if not cfg.data_dir:
                raise ValueError("no photo folder given (--image-dir)")
            kdata.prepare_dataset(cfg.data_dir, cfg.dataset_dir, cfg.data, workers=cfg.gen_workers,
                                  progress=cfg.loop.progress)
        self.train_set = kdata.PairDataset(cfg.dataset_dir, "train")
        self.val_set = kdata.PairDataset(cfg.dataset_dir, "val")
        return {"manifest": kdata.read_manifest(cfg.dataset_dir), "val_pairs": len(self.val_set)}

    def train_size(self) -> int:
        return len(self.train_set)

    def batches(self, indices: np.ndarray, batch_size: int, device: torch.device, workers: int) -> Iterable[Any]:
        kw: Dict[str, Any] = dict(batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                                  drop_last=False)
        if workers > 0:
            kw["prefetch_factor"] = 2
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.train_set, indices.tolist()), **kw)
        for batch in loader:
            yield tuple(t.to(device, non_blocking=True) for t in batch)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        src, dst, h_s2d, h_d2s = batch
        return msip_loss(model(src), model(dst), h_s2d, h_d2s, self.cfg.loss, generator=generator)

    def validate(self, model: nn.Module, device: torch.device, progress: bool) -> Dict[str, float]:
        v = self.cfg.val
        if v.protocol == "benchmark":
            return validate_benchmark(model, self.val_set, device, v.top_k, v.pairs, progress=progress)
        return validate(model, self.val_set, device, v.nms_size, v.num_points, v.overlap, v.relu, v.batch, v.pairs,
                        progress=progress)

    def save(self, path: Path, model: nn.Module, metadata: Dict[str, Any], extra: Optional[Dict[str, Any]] = None
             ) -> None:
        save_checkpoint(path, model, metadata, extra)

    def load(self, path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        model, _, extra = load_checkpoint(path)
        return model.state_dict(), extra

    def config_dict(self) -> Dict[str, Any]:
        return self.cfg.to_dict()


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run (or resume) a Key.Net training; returns the summary of :func:`keynet.base.training.fit`."""
    if isinstance(cfg.data_dir, (list, tuple)):
        cfg = dataclasses.replace(cfg, data_dir=os.pathsep.join(cfg.data_dir))
    return fit(KeyNetTask(cfg), cfg.loop, cfg.out_dir, resume=cfg.resume, command=cfg.command)
