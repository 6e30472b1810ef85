"""Synthetic training pairs for Key.Net, as the official TensorFlow code makes them.

For each source photo a random homography ``H = shear @ scale @ rotation`` is drawn
(scale ~ U(0.5, max_scale), angle ~ U(-max_angle, max_angle) degrees, x-shear ~
U(-max_shearing, max_shearing)); the destination image is the photometrically jittered
colour photo, converted to grey and warped by ``H^-1`` (``cv2.warpPerspective``, same size
as the source). A patch is cut at the image centre of the source and at ``H^-1 @ centre``
of the destination. A pair is rejected when the destination window leaves the image or when
either patch fails the texture test (max |Sobel-x| in the patch, normalised by the image
max, below 0.25); each draw is retried up to ``tries`` times. Each patch is divided by
the maximum of its whole image (the official input scaling).

The pairs are cached as ``.npy`` under a dataset folder (uint8 patches plus their divisors,
so the float patches are reconstructed exactly and 4000 pairs take ~300 MB rather than
1.2 GB), with ``manifest.json`` holding the generation parameters and the image list
digest. A dataset whose manifest differs from the requested parameters is regenerated.

Differences from the official generator (see docs/training.md): several pairs per image
(``pairs_per_image`` passes over the images), train and validation images are disjoint
(validation images are drawn among those large enough for the 2x validation patch), the
hue shift wraps at OpenCV's 8-bit hue range (180) instead of 360, and every draw uses its
own seeded generator so generation is reproducible and parallel.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from keynet.base import cache
from keynet.base.augment import photometric_jitter, random_homography
from keynet.base.files import atomic_save_npy, image_source

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass
class PairConfig:
    """Parameters of the synthetic pair generator (all recorded in the manifest)."""

    max_angle: float = field(default=45.0, metadata={"help": "max rotation, degrees (the paper text says 60)"})
    max_scale: float = field(default=2.0, metadata={"help": "max scale of the synthetic view (paper text: 3.5)"})
    min_scale: float = field(default=0.5, metadata={"help": "min scale of the synthetic view"})
    max_shearing: float = field(default=0.8, metadata={"help": "max x-shear"})
    patch_size: int = field(default=192, metadata={"help": "training patch size"})
    val_patch_size: int = field(default=384, metadata={"help": "validation patch size (2x, as the official code)"})
    num_train: int = field(default=4001, metadata={"help": "max training pairs (official cap 4001)"})
    num_val: int = field(default=1501, metadata={"help": "max validation pairs (official cap 1501)"})
    val_images: int = field(default=150, metadata={"help": "photos reserved for validation (disjoint from training)"})
    pairs_per_image: int = field(default=5, metadata={"help": "passes over the photos (official: 1)"})
    tries: int = field(default=11, metadata={"help": "draws per photo and pass (official loop: 11)"})
    texture_threshold: float = field(default=0.25, metadata={"help": "texture test threshold"})
    photometric: bool = field(default=True, metadata={"help": "colour jitter on the destination view"})
    seed: int = field(default=12345, metadata={
        "flags": ("--data-seed",),
        "help": "seed of the pair generation and the train/val photo split (apart from --seed, so that "
                "training seeds share one dataset)"})

    def __post_init__(self):
        for name in ("max_angle", "max_scale", "min_scale", "max_shearing", "texture_threshold"):
            setattr(self, name, float(getattr(self, name)))
        for name in ("patch_size", "val_patch_size", "num_train", "num_val", "val_images",
                     "pairs_per_image", "tries", "seed"):
            setattr(self, name, int(getattr(self, name)))
        if self.min_scale <= 0 or self.max_scale < self.min_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if self.patch_size < 8 or self.val_patch_size < 8:
            raise ValueError("patch sizes must be at least 8")


# --------------------------------------------------------------------------- one pair

def _abs_sobel_x_norm(grey: np.ndarray) -> np.ndarray:
    sx = np.abs(cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3))
    m = sx.max()
    return sx / m if m > 0 else sx


def make_pair(bgr: np.ndarray, rng: np.random.Generator, cfg: PairConfig, patch_size: int
              ) -> Optional[Dict[str, np.ndarray]]:
    """Try to cut one synthetic pair from a colour photo; ``None`` after ``cfg.tries`` failures.

    Returns uint8 patches ``src``/``dst`` (P x P), their divisors ``div`` (the max of each
    whole grey image, so the network input is ``patch / div``), and ``H_dst2src`` /
    ``H_src2dst`` (3x3, float64, patch pixel coordinates, ``[2, 2] = 1``).
    """
    h_img, w_img = bgr.shape[:2]
    half = patch_size / 2.0
    if half >= h_img - half or half >= w_img - half:
        return None  # image too small for this patch size (the official `break`)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cy, cx = h_img / 2.0, w_img / 2.0
    sy, sx = int(cy - half), int(cx - half)
    src_patch = grey[sy:sy + patch_size, sx:sx + patch_size]
    src_tex = _abs_sobel_x_norm(grey)[sy:sy + patch_size, sx:sx + patch_size].max()
    for _ in range(cfg.tries):
        for _redraw in range(100):  # the official code redraws until the warp is not black
            h = random_homography(rng, cfg.max_angle, cfg.max_scale, cfg.max_shearing, cfg.min_scale)
            inv_h = np.linalg.inv(h)
            inv_h /= inv_h[2, 2]
            dst_col = photometric_jitter(bgr, rng) if cfg.photometric else bgr
            dst_full = cv2.warpPerspective(cv2.cvtColor(dst_col, cv2.COLOR_BGR2GRAY), inv_h, (w_img, h_img))
            if dst_full.max() > 0:
                break
        else:
            return None
        p = inv_h @ np.array([cx, cy, 1.0])
        px, py = p[0] / p[2], p[1] / p[2]
        if py - half < 0 or px - half < 0 or py + half > h_img or px + half > w_img:
            continue
        dy, dx = int(py - half), int(px - half)
        dst_patch = dst_full[dy:dy + patch_size, dx:dx + patch_size]
        if dst_patch.shape != (patch_size, patch_size) or src_patch.shape != (patch_size, patch_size):
            continue
        if _abs_sobel_x_norm(dst_full)[dy:dy + patch_size, dx:dx + patch_size].max() < cfg.texture_threshold:
            continue
        if src_tex < cfg.texture_threshold:
            continue
        t_src = np.array([[1.0, 0.0, -sx], [0.0, 1.0, -sy], [0.0, 0.0, 1.0]])
        t_dst = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        h_d2s = t_src @ h @ t_dst
        h_d2s /= h_d2s[2, 2]
        h_s2d = np.linalg.inv(h_d2s)
        h_s2d /= h_s2d[2, 2]
        return {
            "src": np.ascontiguousarray(src_patch), "dst": np.ascontiguousarray(dst_patch),
            "div": np.array([grey.max(), dst_full.max()], np.float32),
            "H_dst2src": h_d2s, "H_src2dst": h_s2d,
        }
    return None


# --------------------------------------------------------------------------- image lists

def _image_size(path: Path) -> Tuple[int, int]:
    try:
        from PIL import Image
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        return (0, 0) if img is None else img.shape[:2]


def split_images(files: Sequence[Path], cfg: PairConfig) -> Tuple[List[Path], List[Path]]:
    """Disjoint (train, val) photo lists. Validation photos are drawn (seeded) among those
    larger than the validation patch in both dimensions; every other photo trains."""
    rng = np.random.default_rng([cfg.seed, 7])
    order = rng.permutation(len(files))
    big = [i for i in order if min(_image_size(files[i])) > cfg.val_patch_size]
    n_val = min(cfg.val_images, len(big))
    if cfg.num_val > 0 and n_val == 0:
        raise ValueError(f"no photo is larger than the validation patch ({cfg.val_patch_size} px)")
    val_idx = set(big[:n_val])
    val = [files[i] for i in order if i in val_idx]
    train = [files[i] for i in order if i not in val_idx]
    return train, val


# --------------------------------------------------------------------------- generation

def _work(item):
    path, key, cfg_dict, patch_size = item
    cfg = PairConfig(**cfg_dict)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        log.warning("skipping unreadable image %s", path)
        return None
    rng = np.random.default_rng(key)
    return make_pair(bgr, rng, cfg, patch_size)


def generate_pairs(files: Sequence[Path], cfg: PairConfig, count: int, patch_size: int, split_id: int,
                   workers: int = 0, progress: bool = True) -> Dict[str, np.ndarray]:
    """Up to ``count`` pairs from ``files``: pass k over the photos draws pair k of each.

    Every (pass, photo) draw has its own generator seeded by ``(seed, split, pass, photo)``,
    so the result does not depend on ``workers``.
    """
    items = [(files[i], [cfg.seed, split_id, k, i], dataclasses.asdict(cfg), patch_size)
             for k in range(cfg.pairs_per_image) for i in range(len(files))]
    out: Dict[str, list] = {"src": [], "dst": [], "div": [], "H_dst2src": [], "H_src2dst": []}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=count, desc=f"{'val' if split_id else 'train'} pairs", leave=False)

    def consume(results: Iterator):
        for res in results:
            if res is None:
                continue
            for k in out:
                out[k].append(res[k])
            if bar is not None:
                bar.update(1)
            if len(out["src"]) >= count:
                return

    if count > 0:
        if workers and workers > 1:
            with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
                consume(pool.imap(_work, items, chunksize=4))
                pool.terminate()
        else:
            consume(map(_work, items))
    if bar is not None:
        bar.close()
    p = patch_size
    return {
        "src": np.stack(out["src"]) if out["src"] else np.zeros((0, p, p), np.uint8),
        "dst": np.stack(out["dst"]) if out["dst"] else np.zeros((0, p, p), np.uint8),
        "div": np.stack(out["div"]) if out["div"] else np.zeros((0, 2), np.float32),
        "H_dst2src": np.stack(out["H_dst2src"]) if out["H_dst2src"] else np.zeros((0, 3, 3)),
        "H_src2dst": np.stack(out["H_src2dst"]) if out["H_src2dst"] else np.zeros((0, 3, 3)),
    }


def _manifest_for(cfg: PairConfig, files: Sequence[Path], root: Path) -> dict:
    return cache.manifest_for(MANIFEST_VERSION, dataclasses.asdict(cfg), files, Path(root))


_SPLIT_KEYS = ("src", "dst", "div", "H_dst2src", "H_src2dst")


def prepare_dataset(image_dir, out_dir, cfg: PairConfig, workers: int = 0, progress: bool = True,
                    force: bool = False) -> Path:
    """Generate (or reuse) the cached pair dataset in ``out_dir``; returns ``out_dir``.

    Reused only when ``manifest.json`` matches the requested parameters and image list;
    otherwise the pairs are regenerated (with a warning when a different manifest existed).
    """
    out_dir = Path(out_dir)
    files, root = image_source(image_dir)
    want = _manifest_for(cfg, files, root)
    if cache.reuse_or_begin(out_dir, want, cache.split_arrays(_SPLIT_KEYS), "synthetic pairs", force):
        return out_dir
    train_files, val_files = split_images(files, cfg)
    counts = {}
    for split, split_files, n, p, sid in (("train", train_files, cfg.num_train, cfg.patch_size, 0),
                                          ("val", val_files, cfg.num_val, cfg.val_patch_size, 1)):
        arrays = generate_pairs(split_files, cfg, n, p, sid, workers=workers, progress=progress)
        for k in _SPLIT_KEYS:
            atomic_save_npy(out_dir / f"{split}_{k}.npy", arrays[k])
        counts[split] = int(len(arrays["src"]))
        if counts[split] < n:
            log.warning("%s: only %d of the requested %d pairs could be made from %d photos",
                        split, counts[split], n, len(split_files))
    want["counts"] = counts
    want["train_images"] = len(train_files)
    want["val_images"] = len(val_files)
    cache.commit(out_dir, want)
    return out_dir


read_manifest = cache.read_manifest


# --------------------------------------------------------------------------- torch dataset

class PairDataset(Dataset):
    """Cached synthetic pairs of one split.

    Items: ``(src, dst, H_src2dst, H_dst2src)`` with images float32 1 x P x P (divided by
    their image max) and homographies float32 3 x 3 in patch pixel coordinates.
    """

    def __init__(self, root, split: str = "train", indices: Optional[Sequence[int]] = None):
        self.root = Path(root)
        self.split = split
        self._arr = None
        n = np.load(self.root / f"{split}_src.npy", mmap_mode="r").shape[0]
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)

    def _arrays(self):
        if self._arr is None:  # opened lazily so that DataLoader workers each map the files
            self._arr = {k: np.load(self.root / f"{self.split}_{k}.npy", mmap_mode="r") for k in _SPLIT_KEYS}
        return self._arr

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        a = self._arrays()
        j = int(self.indices[i])
        div = a["div"][j].astype(np.float32)
        src = torch.from_numpy(np.asarray(a["src"][j], dtype=np.float32) / div[0])[None]
        dst = torch.from_numpy(np.asarray(a["dst"][j], dtype=np.float32) / div[1])[None]
        return (src, dst, torch.from_numpy(np.asarray(a["H_src2dst"][j], dtype=np.float32)),
                torch.from_numpy(np.asarray(a["H_dst2src"][j], dtype=np.float32)))
