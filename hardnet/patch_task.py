"""The base of the patch-network training tasks (HardNet, OriNet, AffNet): what they share
for :func:`keynet.base.training.fit` — the patch pairs made from photos (generated once,
cached, split into train / val by photo), the training-set size, the checkpoint format of
the network, the data order and the recorded configuration. A subclass brings the network,
its batches, loss and validation."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from keynet.base.training import Task

from .data import KeypointFn, load_split, prepare_patch_pairs, read_manifest


def _check_pair_set(folder: str) -> None:
    if not (Path(folder) / "manifest.json").is_file():
        raise FileNotFoundError(f"no finished patch pairs in {folder} (make them with keynet hardnet-data)")


def join_pair_sets(train: Dict[str, np.ndarray], folders: Sequence[str], repeat: int = 1
                   ) -> Tuple[Dict[str, np.ndarray], Dict[str, Dict[str, np.ndarray]], Dict[str, Any]]:
    """``train`` with the train splits of the pair folders ``folders`` appended (each ``repeat``
    times), each folder's ``image`` ids shifted past every id before it (so ids of different
    sources never meet in the same-point mask); returns ``(joined train set, val split by
    folder name, counts)``."""
    if repeat < 1:
        raise ValueError(f"extra_repeat must be >= 1, got {repeat}")
    parts, vals, counts = [train], {}, {}
    next_id = int(train["image"].max()) + 1 if len(train["image"]) else 0
    for folder in folders:
        _check_pair_set(folder)
        name = Path(folder).name
        tr, va = load_split(folder, "train"), load_split(folder, "val")
        own = np.concatenate([tr["image"], va["image"]]).astype(np.int64)
        shift = next_id - int(own.min()) if len(own) else 0
        tr = {**tr, "image": (tr["image"].astype(np.int64) + shift).astype(np.int32)}
        va = {**va, "image": (va["image"].astype(np.int64) + shift).astype(np.int32)}
        ids = np.concatenate([tr["image"], va["image"]])
        next_id = int(ids.max()) + 1 if len(ids) else next_id
        parts += [tr] * repeat
        vals[name] = va
        counts[name] = {"train": int(len(tr["a"])), "val": int(len(va["a"]))}
    joined = {k: np.concatenate([p[k] for p in parts]) for k in train}
    return joined, vals, counts


class PatchPairTask(Task):
    """A patch network trained on the pairs of :mod:`hardnet.data`.

    Subclasses set :attr:`order_salt` (their data order differs from the other tasks') and
    :attr:`checkpoint_io` (``(save(path, model, metadata, extra), load_checkpoint(path,
    device) -> (model, metadata, extra))``), and implement ``build_model``, ``batches``,
    ``loss`` and ``validate``. ``cfg`` must carry ``image_dir``, ``dataset_dir``, ``data``
    (:class:`hardnet.data.PatchPairConfig`), ``loop``, ``regenerate`` and ``max_images``.
    """

    order_salt: int = 0
    checkpoint_io: Tuple[Callable[..., None], Callable[..., Any]]

    def __init__(self, cfg: Any, keypoint_fn: Optional[KeypointFn] = None) -> None:
        self.cfg = cfg
        self.keypoint_fn = keypoint_fn
        self.train_set: Dict[str, np.ndarray] = {}
        self.val_set: Dict[str, np.ndarray] = {}
        self.extra_val_sets: Dict[str, Dict[str, np.ndarray]] = {}

    def load_patch_pairs(self, main: bool) -> Dict[str, Any]:
        """Generate the pairs (rank 0, once; cached) and load both splits; returns the
        dataset description for ``config.json``."""
        cfg = self.cfg
        extra = [d for d in str(getattr(cfg, "extra_pairs", "") or "").split(os.pathsep) if d]
        for folder in extra:  # before any generation: a wrong folder must not cost the photos' pairs first
            _check_pair_set(folder)
        if main:
            if not cfg.image_dir:
                raise ValueError("no photo folder given (--image-dir)")
            prepare_patch_pairs(cfg.image_dir, cfg.dataset_dir, cfg.data, progress=cfg.loop.progress,
                                force=cfg.regenerate, max_images=cfg.max_images, keypoint_fn=self.keypoint_fn)
        self.train_set = load_split(cfg.dataset_dir, "train")
        self.val_set = load_split(cfg.dataset_dir, "val")
        man = read_manifest(cfg.dataset_dir)
        info = {"dataset": str(cfg.dataset_dir), "params": man.get("params"), "source": man.get("source"),
                "counts": man.get("counts")}
        self.extra_val_sets = {}
        if extra:
            self.train_set, self.extra_val_sets, info["extra_pairs"] = join_pair_sets(
                self.train_set, extra, int(getattr(cfg, "extra_repeat", 1)))
        return info

    def train_size(self) -> int:
        return len(self.train_set["a"])

    def save(self, path: Path, model: nn.Module, metadata: Dict[str, Any], extra: Optional[Dict[str, Any]] = None
             ) -> None:
        self.checkpoint_io[0](path, model, metadata, extra)

    def load(self, path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        model, _, extra = self.checkpoint_io[1](path, "cpu")
        return model.state_dict(), extra

    def order_key(self, seed: int):
        return (seed, self.order_salt, 0)

    def config_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.cfg)
