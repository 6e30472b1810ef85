"""Patch pairs of real 3D points: the observations of Structure-from-Motion tracks (the
PhotoTour / Brown recipe: real viewpoint and lighting change between real photos).

A track is one 3D point of a reconstruction and the keypoints that observe it, one per
image: ``(image name, x, y, scale)`` in the pixels of the images as given (the working size
the features were detected at). For every track with at least two observations, the first
observation (by image name) is the anchor, and up to ``pairs_per_point`` other observations
(seeded draw) each make a pair with it: both patches cut by the extraction code
(:func:`hardnet.patches.extract_patches`, 64 x scale px, upright) at each observation's own
detected position and scale, so the pair differs as two detections of one point do.

Negatives: the pair's ``image`` id is ``image_offset`` + the anchor image's index and
``kpt_a`` its position there, so the loss's same-point mask treats pairs of one 3D point
(and near-duplicate points of one anchor image) as the same point. ``angle`` is NaN (the
relative rotation is not known from a track; only the orientation network uses it).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .data import ARRAY_KEYS
from .patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, extract_patches

#: One observation of a 3D point: image name, x, y (px), scale (Key.Net units, same pixels).
Observation = Tuple[str, float, float, float]


def _inside(grey: np.ndarray, x: float, y: float, scale: float, magnification: float) -> bool:
    half = magnification * scale * PATCH_SIZE / 2.0
    h, w = grey.shape[:2]
    return half <= x <= w - 1 - half and half <= y <= h - 1 - half


def pairs_from_tracks(tracks: Sequence[Sequence[Observation]], images: Dict[str, np.ndarray],
                      pairs_per_point: int = 3, seed: int = 0, image_offset: int = 0,
                      magnification: float = DEFAULT_MAGNIFICATION) -> Dict[str, np.ndarray]:
    """Patch pairs (arrays of :data:`hardnet.data.ARRAY_KEYS`) of the tracks' observations.

    ``images``: grey images (H, W) by name, at the pixels of the observations. Observations
    whose patch square leaves their image are dropped first; a track needs two left."""
    names = sorted(images)
    index = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng([seed, 61])
    sel: List[Tuple[Observation, Observation]] = []
    for track in tracks:
        obs = sorted((o for o in track if o[0] in images and _inside(images[o[0]], o[1], o[2], o[3], magnification)),
                     key=lambda o: o[0])
        if len(obs) < 2:
            continue
        others = obs[1:]
        pick = rng.permutation(len(others))[:pairs_per_point]
        sel += [(obs[0], others[k]) for k in sorted(pick)]
    out = {k: [] for k in ARRAY_KEYS}
    by_image: Dict[Tuple[str, int], List[int]] = {}
    for i, pair in enumerate(sel):
        for side in (0, 1):
            by_image.setdefault((pair[side][0], side), []).append(i)
    p = PATCH_SIZE
    patches = {0: np.zeros((len(sel), p, p), np.uint8), 1: np.zeros((len(sel), p, p), np.uint8)}
    for (name, side), rows in by_image.items():
        k = torch.tensor([[sel[i][side][1], sel[i][side][2], sel[i][side][3]] for i in rows], dtype=torch.float32)
        with torch.no_grad():
            pt = extract_patches(torch.from_numpy(images[name].astype(np.float32)), k, magnification=magnification)
        patches[side][rows] = np.clip(np.round(pt[:, 0].numpy()), 0, 255).astype(np.uint8)
    out = {
        "a": patches[0], "b": patches[1],
        "image": np.array([image_offset + index[a[0]] for a, _ in sel], dtype=np.int32),
        "kpt_a": np.array([a[1:] for a, _ in sel], dtype=np.float32).reshape(-1, 3),
        "kpt_b": np.array([b[1:] for _, b in sel], dtype=np.float32).reshape(-1, 3),
        "angle": np.full(len(sel), np.nan, dtype=np.float32),
    }
    return out
