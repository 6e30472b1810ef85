"""Running a feature extractor over an image list into the official feature layout
``<results>/<name>/<image-list line>.{kpt,dsc}.npy``: the one loop behind the extraction
script and the baselines script (skip what exists, atomic writes, per-image failures
recorded by name and the rest processed)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.distributed
from tqdm import tqdm

from .device import LaunchEnv
from .files import affine_path, atomic_save_npy, feature_paths, orientation_path
from .images import ImageReadError

PathLike = Union[str, os.PathLike]
#: ``image path -> (keypoints (N, 4) x, y, scale, score; descriptors (N, D) or None)``, or a
#: third item: orientations (N,) in degrees (written as ``.ori.npy``) or None, and a fourth:
#: affine shapes (N, 2, 2) (written as ``.aff.npy``) or None
ExtractFn = Callable[[Path], Tuple[np.ndarray, ...]]


@dataclass
class RunSummary:
    """What a run over an image list did."""
    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)   # outputs already there
    missing: List[str] = field(default_factory=list)   # images absent (only with skip_missing)
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (line, reason)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """One-line report."""
        extra = f", {len(self.missing)} images missing (skipped)" if self.missing else ""
        return (f"{len(self.written)} written, {len(self.skipped)} skipped (already there){extra}, "
                f"{len(self.failed)} failed, {self.seconds:.1f} s")


def run_list(items: Sequence[str], results_dir: PathLike, name: str, extract: ExtractFn,
             locate: Callable[[str], Path], overwrite: bool = False, order_coord: str = "xysr",
             descriptors: bool = True, skip_missing: bool = False, progress: bool = True,
             orientations: bool = False, shapes: bool = False,
             bad_input: Tuple[Type[BaseException], ...] = (ImageReadError,)) -> RunSummary:
    """Extract every line of ``items`` (``locate`` maps a line to its image file).

    Existing outputs are kept unless ``overwrite`` (with ``descriptors``, both files must
    exist); a missing image is skipped with ``skip_missing``, otherwise it fails like an
    unreadable one (``bad_input`` exceptions): the failure is recorded with its reason
    and the next image processed. Keypoints are written last (the descriptor file of an
    image is never newer than a complete keypoint file); a stale descriptor file is removed
    when the extractor gives none. With ``orientations`` the extractor returns a third item,
    the keypoint orientations, written to ``<line>.ori.npy`` (N float32 degrees, same order
    as the keypoints) and required for an image to count as done; a stale one is removed
    when the extractor gives none. With ``shapes`` likewise for a fourth item, the affine
    shapes, written to ``<line>.aff.npy`` (N x 2 x 2 float32).
    """
    if order_coord not in ("xysr", "yxsr"):
        raise ValueError(f"order_coord must be 'xysr' or 'yxsr', got {order_coord!r}")
    summary = RunSummary()
    t0 = time.time()
    bar = tqdm(items, desc=f"extract {name}", unit="img", disable=not progress)
    for item in bar:
        kpt_path, dsc_path = feature_paths(results_dir, name, item)
        ori_path = orientation_path(results_dir, name, item)
        aff_path = affine_path(results_dir, name, item)
        if (not overwrite and kpt_path.exists() and (dsc_path.exists() or not descriptors)
                and (ori_path.exists() or not orientations) and (aff_path.exists() or not shapes)):
            summary.skipped.append(item)
            continue
        path = locate(item)
        if skip_missing and not Path(path).is_file():
            summary.missing.append(item)
            continue
        try:
            res = extract(path)
        except bad_input as e:
            summary.failed.append((item, str(e)))
            bar.write(f"[WARNING] skipped {item}: {e}", file=sys.stderr)  # the one line naming it
            continue
        kpts, desc = res[0], res[1]
        ori = res[2] if len(res) > 2 else None
        shp = res[3] if len(res) > 3 else None
        out = kpts if order_coord == "xysr" else kpts[:, [1, 0, 2, 3]]
        for side, value, shape in ((ori_path, ori, (-1,)), (aff_path, shp, (-1, 2, 2))):
            if value is not None:
                atomic_save_npy(side, np.asarray(value, dtype=np.float32).reshape(shape))
            elif side.exists():
                side.unlink()  # a stale side file would no longer match the keypoints
        if desc is not None:
            atomic_save_npy(dsc_path, desc)
        elif dsc_path.exists():
            dsc_path.unlink()  # a stale descriptor file would no longer match the keypoints
        atomic_save_npy(kpt_path, out)
        summary.written.append(item)
        bar.set_postfix(points=len(kpts), refresh=False)
    summary.seconds = time.time() - t0
    return summary


# --------------------------------------------------------------------------- several processes
@dataclass(frozen=True)
class Shard(LaunchEnv):
    """This process's share of a list when launched by ``torchrun`` (or any launcher that
    sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, read by :class:`LaunchEnv`): items
    ``rank, rank + world, ...``."""

    def take(self, items: Sequence[str]) -> List[str]:
        return list(items)[self.rank::self.world]


def merge_summaries(parts: Sequence[RunSummary]) -> RunSummary:
    """One summary of several processes' runs (wall time: the slowest)."""
    out = RunSummary()
    for s in parts:
        out.written += s.written
        out.skipped += s.skipped
        out.missing += s.missing
        out.failed += s.failed
        out.seconds = max(out.seconds, s.seconds)
    return out


def gather_summaries(summary: RunSummary, shard: Shard) -> RunSummary:
    """Every process's summary merged (on every rank); one process: itself. Uses a gloo
    process group (CPU), created here when the launcher did not."""
    if shard.world <= 1:
        return summary
    dist = torch.distributed
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="gloo")
    parts: List[Optional[RunSummary]] = [None] * shard.world
    dist.all_gather_object(parts, summary)
    if created:  # a group left alive aborts the process at exit
        dist.barrier()
        dist.destroy_process_group()
    return merge_summaries([p for p in parts if p is not None])
