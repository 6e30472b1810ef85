"""The tracks of a reconstruction as keypoint observations (image, x, y, scale): the input of
the SfM patch pairs (:mod:`hardnet.sfm_pairs`).

A model written by :func:`keynet.pipeline.reconstruction.reconstruct` keeps every keypoint
of ``features.h5`` as a COLMAP 2D point in order, so a track element's ``point2D_idx`` is
the index of its keypoint, whose Key.Net scale is stored next to it. Positions and scales
are given at the working size the features were detected at (the longest side at most
``max_image_size``, :func:`keynet.pipeline.matching.read_for_extraction`), with the grey
images at that size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import pycolmap

from . import hloc_io
from .extraction import read_for_extraction

PathLike = Union[str, os.PathLike]
Observation = Tuple[str, float, float, float]


def sfm_tracks(model_dir: PathLike, features_path: PathLike, image_dir: PathLike, max_image_size: int
               ) -> Tuple[List[List[Observation]], Dict[str, np.ndarray]]:
    """``(tracks, grey images by name)`` of a model (``sparse/<k>``) and its features file."""
    rec = pycolmap.Reconstruction(str(model_dir))
    names = {image_id: img.name for image_id, img in rec.images.items()}
    images: Dict[str, np.ndarray] = {}
    kpts: Dict[str, np.ndarray] = {}
    for name in sorted(names.values()):
        grey, (sx, sy), _ = read_for_extraction(Path(image_dir) / name, max_image_size)
        f = hloc_io.read_features(features_path, name)
        if "scales" not in f:
            raise ValueError(f"{features_path}: no keypoint scales for {name} (not written by keynet reconstruct)")
        k = np.c_[(f["keypoints"][:, 0] + 0.5) / sx - 0.5, (f["keypoints"][:, 1] + 0.5) / sy - 0.5,
                  f["scales"] / (0.5 * (sx + sy))]
        images[name], kpts[name] = grey.astype(np.float32), k
    tracks = []
    for _, point in rec.points3D.items():
        obs = []
        for el in point.track.elements:
            name = names[el.image_id]
            x, y, s = kpts[name][el.point2D_idx]
            obs.append((name, float(x), float(y), float(s)))
        tracks.append(obs)
    return tracks, images
