"""The tracks of a reconstruction as keypoint observations, and the SfM patch pairs cut from
them where the cameras project the 3D points (synthetic scene with known cameras)."""
from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from hardnet.sfm_pairs import pairs_from_tracks
from keynet.pipeline import matching, reconstruction
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig
from keynet.pipeline.tracks import sfm_tracks
from synthetic_scene import make_scene

pycolmap.logging.minloglevel = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracks")
    K, gt, names = make_scene(root / "images")
    cfg = ReconstructionConfig(features=matching.FeatureConfig(num_points=600, max_image_size=256),
                               camera=CameraConfig("single", "PINHOLE",
                                                   (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5), False))
    res = reconstruction.reconstruct(root / "images", root / "out", cfg, progress=False, log=lambda s: None)
    return root, res


@pytest.mark.slow
def test_track_observations_are_where_the_cameras_project_the_points(model):
    root, res = model
    tracks, images = sfm_tracks(res.model_dirs[0], root / "out" / "features.h5", root / "images", 256)
    rec = pycolmap.Reconstruction(str(res.model_dirs[0]))  # the model as sfm_tracks reads it
    assert len(tracks) == rec.num_points3D() > 100
    assert all(max(g.shape) == 256 for g in images.values())
    by_name = {img.name: img for img in rec.images.values()}
    errs = []
    for (pid, point), track in zip(rec.points3D.items(), tracks):
        for name, x, y, s in track:
            img = by_name[name]
            cam = rec.cameras[img.camera_id]
            full = cam.img_from_cam(img.cam_from_world() * point.xyz)  # COLMAP pixels, full size
            w, h = cam.width, cam.height
            sx, sy = w / images[name].shape[1], h / images[name].shape[0]
            # COLMAP's pixels -> ours (-0.5) -> the working size (read_for_extraction's mapping)
            work = ((full[0] - 0.5 + 0.5) / sx - 0.5, (full[1] - 0.5 + 0.5) / sy - 0.5)
            errs.append(np.hypot(x - work[0], y - work[1]))
            assert s > 0
    assert np.median(errs) < 0.4 and np.percentile(errs, 90) < 2.0  # measured 0.25 / 1.1
    pairs = pairs_from_tracks(tracks, images, pairs_per_point=2)
    assert len(pairs["a"]) > 100 and pairs["a"].shape[1:] == (32, 32)
