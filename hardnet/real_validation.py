"""Descriptors scored on real image pairs with known geometry: the validation that chooses
HardNet checkpoints and settings, and the benchmark of descriptors on real appearance change.

A validation set is a list of :class:`EvalPair` (two images, the homography A -> B, a
pixel threshold and a group name) made once into a folder (:func:`make_eval_set`): the
keypoints of each image (from a keypoint function, Key.Net in the commands), the upright
32x32 patches the extraction cuts there, and the grey images, so that scoring a network
per epoch costs only its forward pass on the stored patches.

Scoring (:func:`score_pair`), at the same keypoints for every descriptor:

* matches: mutual nearest neighbours of the descriptors (L2);
* a match is correct when the B keypoint lies within ``threshold`` px of the A keypoint
  mapped by the ground truth;
* ``mma``: correct matches / matches (mean matching accuracy, the precision of D2-Net's
  "MMA"); 0 for a pair with no match;
* ``ms``: correct matches / min(A points that land inside B, B points that land inside A)
  (the matching score of the HSequences benchmark).

Groups are averaged pair by pair; the validation score (:func:`summarise`) is the mean of
the groups' MMA, each group counting once (``webcam``: held-out webcams across lighting and
season, identity ground truth; ``multimodal``: visible / thermal and colour / near-infrared
pairs with their hand-labelled transforms).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from keynet.base import cache
from keynet.base.files import atomic_write_bytes, list_images

from .data import KeypointFn
from .patches import DEFAULT_MAGNIFICATION, extract_patches

log = logging.getLogger(__name__)

VERSION = 1
#: Images above this many pixels are shrunk for validation (1024 x 640), the ground truth with them.
MAX_PIXELS = 1024 * 640
#: Correctness thresholds (px, at the stored size): the webcams' identity holds within ~2 px
#: (measured drift); the near-infrared pairs' landmarks agree with their transform within 0.7-2.2 px.
WEBCAM_THRESHOLD = 3.0
MULTIMODAL_THRESHOLD = 5.0


class EvalSetError(ValueError):
    """A validation source that cannot be used (missing folder or ground truth)."""


@dataclass
class EvalPair:
    """Two images of one scene and the homography mapping pixels of A to B (0-based)."""

    group: str
    name: str
    image_a: str
    image_b: str
    h_ab: List[List[float]]
    threshold: float


# --------------------------------------------------------------------------- sources

def webcam_eval_pairs(webcam_dir, names: Sequence[str], per_webcam: int = 20, seed: int = 0) -> List[EvalPair]:
    """``per_webcam`` seeded pairs of distinct frames of each named webcam (identity ground truth)."""
    pairs = []
    for w, name in enumerate(names):
        folder = Path(webcam_dir) / name
        if not folder.is_dir():
            raise EvalSetError(f"webcam folder not found: {folder}")
        frames = list_images(folder)
        if len(frames) < 2:
            raise EvalSetError(f"{folder}: needs at least 2 frames, found {len(frames)}")
        rng = np.random.default_rng([seed, 71, w])
        seen = set()
        all_pairs = len(frames) * (len(frames) - 1) // 2
        while len(seen) < min(per_webcam, all_pairs):
            i, j = sorted(int(x) for x in rng.choice(len(frames), 2, replace=False))
            seen.add((i, j))
        for i, j in sorted(seen):
            pairs.append(EvalPair("webcam", f"{name}/{frames[i].stem}-{frames[j].stem}", str(frames[i]),
                                  str(frames[j]), np.eye(3).tolist(), WEBCAM_THRESHOLD))
    return pairs


def matlab_to_zero_based(h: np.ndarray) -> np.ndarray:
    """A homography between 1-based (MATLAB) pixel coordinates, for 0-based coordinates."""
    one = np.array([[1.0, 0, 1], [0, 1, 1], [0, 0, 1]])  # 0-based -> 1-based
    m = np.linalg.inv(one) @ np.asarray(h, dtype=np.float64) @ one
    return m / m[2, 2]


def multimodal_eval_pairs(multimodal_dir) -> List[EvalPair]:
    """The cross-sensor pairs of the multimodal set: A = ``*_a.png`` (visible / colour), B =
    ``*_b.png`` (thermal / near infrared); ``H_moving_to_fixed`` maps B to A in MATLAB's
    1-based pixels, so ``h_ab`` is its inverse in 0-based pixels."""
    root = Path(multimodal_dir)
    pairs = []
    for sub, gt_name, group in (("VIS_IR", "gt_vis_ir.json", "vis_ir"), ("RGB_NIR", "gt_rgb_nir.json", "rgb_nir")):
        gt_path = root / sub / gt_name
        if not gt_path.is_file():
            raise EvalSetError(f"multimodal ground truth not found: {gt_path}")
        gt = json.loads(gt_path.read_text())["pairs"]
        for key in sorted(gt, key=lambda k: (len(k), k)):
            rec = gt[key]
            h_ba = matlab_to_zero_based(np.asarray(rec["H_moving_to_fixed"], dtype=np.float64))
            h_ab = np.linalg.inv(h_ba)
            pairs.append(EvalPair(group, f"{sub}/{key}", str(root / sub / rec["image_fixed"]),
                                  str(root / sub / rec["image_moving"]), (h_ab / h_ab[2, 2]).tolist(),
                                  MULTIMODAL_THRESHOLD))
    return pairs


# --------------------------------------------------------------------------- the set

def _load_grey(path: str, max_pixels: int):
    """The grey image, shrunk to at most ``max_pixels``, and the 3x3 scaling applied to its pixels."""
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise EvalSetError(f"cannot read image: {path}")
    h, w = img.shape
    s = min(1.0, (max_pixels / float(h * w)) ** 0.5)
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return img, np.diag([img.shape[1] / w, img.shape[0] / h, 1.0])


def _patches(grey: np.ndarray, kpts: np.ndarray, magnification: float) -> np.ndarray:
    with torch.no_grad():
        p = extract_patches(torch.from_numpy(grey.astype(np.float32)), torch.from_numpy(kpts[:, :3]).float(),
                            magnification=magnification)
    return np.clip(np.round(p[:, 0].numpy()), 0, 255).astype(np.uint8)


def make_eval_set(pairs: Sequence[EvalPair], keypoint_fn: KeypointFn, out_dir, detector_name: str,
                  max_pixels: int = MAX_PIXELS, magnification: float = DEFAULT_MAGNIFICATION,
                  progress: bool = True) -> Path:
    """Keypoints, patches and grey images of every pair into ``out_dir`` (one ``.npz`` a pair and
    ``manifest.json``); reused when the pairs and the detector match, resumed pair by pair."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    params = {"pairs": [asdict(p) for p in pairs], "detector": detector_name, "max_pixels": max_pixels,
              "magnification": magnification}
    files = sorted({Path(p.image_a).resolve() for p in pairs} | {Path(p.image_b).resolve() for p in pairs})
    root = Path("/")
    want = cache.manifest_for(VERSION, params, files, root)
    names = [f"pair_{i:04d}" for i in range(len(pairs))]
    if cache.reusable(out_dir, want, names, "validation pairs"):
        return out_dir
    man = out_dir / "manifest.json"
    if man.exists():
        man.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    part = out_dir / "params.json"  # the parameters the pair files already written belong to
    same = part.is_file() and json.loads(part.read_text()) == json.loads(json.dumps(want))
    if not same:
        for f in out_dir.glob("pair_*.npy"):
            f.unlink()
        atomic_write_bytes(part, json.dumps(want).encode())
    for name, pair in zip(tqdm(names, desc="validation pairs", unit="pair", disable=not progress), pairs):
        target = out_dir / f"{name}.npy"
        if target.is_file():
            continue
        ga, sa = _load_grey(pair.image_a, max_pixels)
        gb, sb = _load_grey(pair.image_b, max_pixels)
        h = sb @ np.asarray(pair.h_ab) @ np.linalg.inv(sa)
        ka = np.asarray(keypoint_fn(ga), dtype=np.float64)[:, :3]
        kb = np.asarray(keypoint_fn(gb), dtype=np.float64)[:, :3]
        rec = {"group": pair.group, "name": pair.name, "h_ab": h / h[2, 2], "threshold": pair.threshold,
               "kpt_a": ka.astype(np.float32), "kpt_b": kb.astype(np.float32),
               "patch_a": _patches(ga, ka, magnification), "patch_b": _patches(gb, kb, magnification),
               "grey_a": ga, "grey_b": gb}
        tmp = target.with_suffix(".tmp.npy")
        np.save(tmp, np.array(rec, dtype=object), allow_pickle=True)
        tmp.replace(target)
    cache.commit(out_dir, want)
    return out_dir


def load_eval_set(out_dir) -> List[Dict[str, object]]:
    """The pairs of a set made by :func:`make_eval_set` (dicts, in order)."""
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.json").is_file():
        raise EvalSetError(f"{out_dir}: not a finished validation set (make it with keynet hardnet-data)")
    n = len(cache.read_manifest(out_dir)["params"]["pairs"])
    return [np.load(out_dir / f"pair_{i:04d}.npy", allow_pickle=True).item() for i in range(n)]


# --------------------------------------------------------------------------- scoring

def mutual_nn(da: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(M, 2) indices of the mutual nearest neighbours of two descriptor sets (L2)."""
    if len(da) == 0 or len(db) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    d = torch.cdist(torch.as_tensor(da, dtype=torch.float32), torch.as_tensor(db, dtype=torch.float32))
    ab = d.argmin(1)
    ba = d.argmin(0)
    i = torch.arange(len(da))
    keep = ba[ab] == i
    return torch.stack([i[keep], ab[keep]], 1).numpy()


def _project(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.c_[xy, np.ones(len(xy))] @ h.T
    return p[:, :2] / p[:, 2:3]


def score_pair(kpt_a: np.ndarray, kpt_b: np.ndarray, desc_a: np.ndarray, desc_b: np.ndarray, h_ab: np.ndarray,
               threshold: float, shape_a, shape_b) -> Dict[str, float]:
    """``matches``, ``correct``, ``mma`` and ``ms`` of one pair (see the module doc)."""
    m = mutual_nn(desc_a, desc_b)
    h_ab = np.asarray(h_ab, dtype=np.float64)
    if len(m):
        err = np.linalg.norm(_project(h_ab, kpt_a[m[:, 0], :2].astype(np.float64)) - kpt_b[m[:, 1], :2], axis=1)
        correct = int((err <= threshold).sum())
    else:
        correct = 0

    def inside(xy, shape):
        return (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] <= shape[1] - 1) & (xy[:, 1] <= shape[0] - 1)

    na = int(inside(_project(h_ab, kpt_a[:, :2].astype(np.float64)), shape_b).sum()) if len(kpt_a) else 0
    nb = int(inside(_project(np.linalg.inv(h_ab), kpt_b[:, :2].astype(np.float64)), shape_a).sum()) if len(kpt_b) else 0
    return {"matches": int(len(m)), "correct": correct, "mma": correct / len(m) if len(m) else 0.0,
            "ms": correct / min(na, nb) if min(na, nb) > 0 else 0.0}


#: A descriptor under test: ``(patches uint8 (N, 32, 32), keypoints (N, 3), grey image) -> (N, D)``.
DescribeFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def evaluate(eval_set: Sequence[Dict[str, object]], describe: DescribeFn) -> List[Dict[str, object]]:
    """One row per pair: group, name and :func:`score_pair`'s numbers."""
    rows = []
    for rec in eval_set:
        da = describe(rec["patch_a"], rec["kpt_a"], rec["grey_a"])
        db = describe(rec["patch_b"], rec["kpt_b"], rec["grey_b"])
        s = score_pair(rec["kpt_a"], rec["kpt_b"], da, db, rec["h_ab"], float(rec["threshold"]),
                       rec["grey_a"].shape, rec["grey_b"].shape)
        rows.append({"group": rec["group"], "name": rec["name"], **s})
    return rows


#: The groups of the validation score and which pair groups they pool.
SCORE_GROUPS = {"webcam": ("webcam",), "multimodal": ("vis_ir", "rgb_nir")}


def summarise(rows: Sequence[Dict[str, object]]) -> Dict[str, float]:
    """Mean MMA / MS per pair group and per score group, and ``score``: the mean of the score
    groups' MMA (the validation score; groups absent from ``rows`` are left out)."""
    out: Dict[str, float] = {}
    groups = sorted({r["group"] for r in rows})
    for g in groups:
        sel = [r for r in rows if r["group"] == g]
        out[f"{g}_mma"] = float(np.mean([r["mma"] for r in sel]))
        out[f"{g}_ms"] = float(np.mean([r["ms"] for r in sel]))
    parts = []
    for name, members in SCORE_GROUPS.items():
        sel = [r for r in rows if r["group"] in members]
        if sel:
            out[f"{name}_pool_mma"] = float(np.mean([r["mma"] for r in sel]))
            parts.append(out[f"{name}_pool_mma"])
    out["score"] = float(np.mean(parts)) if parts else float("nan")
    return out


def network_describer(model: torch.nn.Module, device="cpu", batch: int = 1024) -> DescribeFn:
    """A :data:`DescribeFn` of a patch network (HardNet: uint8 patches / 255 in, (N, 128) out)."""
    def describe(patches: np.ndarray, kpts: np.ndarray, grey: Optional[np.ndarray] = None) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(patches), batch):
                x = torch.from_numpy(np.ascontiguousarray(patches[i:i + batch])).to(device).float().div_(255.0)[:, None]
                out.append(model(x).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)
    return describe
