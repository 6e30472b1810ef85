"""COLMAP's global and hierarchical mappers in ``keynet reconstruct`` (``--mapper``): the
same outputs and summary as the incremental mapper, fixed intrinsics held with every
mapper, on the synthetic scene and on a few real Strecha photos against their ground
truth; and retrieval pairs end to end (``--pairs retrieval``)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from keynet.commands import reconstruct as reconstruct_cli
from keynet.pipeline import matching, reconstruction
from keynet.pipeline.pairs import read_pairs
from keynet.pipeline.reconstruction import MAPPERS, CameraConfig, ReconstructionConfig
from conftest import _need  # ../shared: skip without it, fail under CI=true
from synthetic_scene import make_scene

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from sfm_strecha import load_scene, pinhole  # noqa: E402

pycolmap.logging.minloglevel = 2
FAST = matching.FeatureConfig(num_points=1000, max_image_size=0)


def colmap_pinhole(K):
    return (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    K, gt, names = make_scene(root / "images")
    return root, K, gt, names


@pytest.fixture(scope="module")
def matched(scene, tmp_path_factory):
    """Features and matches of the synthetic scene, computed once (the mappers reuse them)."""
    root, K, gt, names = scene
    out = tmp_path_factory.mktemp("out")
    cfg = ReconstructionConfig(features=FAST, camera=CameraConfig("single", "PINHOLE", colmap_pinhole(K), False))
    reconstruction.reconstruct(root / "images", out, cfg, progress=False, log=lambda s: None)
    return out, cfg


def test_mapper_option_checked():
    assert ReconstructionConfig().mapper == "incremental" and MAPPERS == ("incremental", "global", "hierarchical")
    with pytest.raises(ValueError, match="unknown mapper 'fast'"):
        ReconstructionConfig(mapper="fast")
    fixed = ReconstructionConfig(camera=CameraConfig("single", "PINHOLE", (1.0, 1.0, 0.5, 0.5), False), seed=3)
    g = reconstruction.global_mapper_options(fixed)
    ba = g.mapper.bundle_adjustment
    assert not ba.refine_focal_length and not ba.refine_extra_params and not ba.refine_principal_point
    assert g.random_seed == 3 and g.mapper.global_positioning.random_seed == 3
    assert reconstruction.global_mapper_options(ReconstructionConfig()).mapper.bundle_adjustment.refine_focal_length
    h = reconstruction.hierarchical_mapper_options(fixed)
    assert not h.incremental_options.ba_refine_focal_length and not h.incremental_options.mapper.abs_pose_refine_focal_length


def test_min_model_size_reaches_every_mapper():
    """``min_model_size``: COLMAP's default of each mapper unless given (COLMAP drops the models
    after the first with fewer registered images: scenes of a mixed collection)."""
    assert reconstruction.mapper_options(ReconstructionConfig()).min_model_size == 10
    assert reconstruction.global_mapper_options(ReconstructionConfig(mapper="global")).min_model_size == 3
    h = reconstruction.hierarchical_mapper_options(ReconstructionConfig(mapper="hierarchical"))
    assert h.incremental_options.min_model_size == 10
    for mapper in MAPPERS:
        cfg = ReconstructionConfig(mapper=mapper, min_model_size=4)
        assert reconstruction.mapper_options(cfg).min_model_size == 4
        assert reconstruction.global_mapper_options(cfg).min_model_size == 4
        assert reconstruction.hierarchical_mapper_options(cfg).incremental_options.min_model_size == 4
    for bad in (1, 2.5):
        with pytest.raises(ValueError, match="min_model_size must be an integer >= 2"):
            ReconstructionConfig(min_model_size=bad)
    args = reconstruct_cli.parse_args(["--image-dir", "x", "--out", "y", "--min-model-size", "5"])
    assert args.min_model_size == 5 and reconstruct_cli.parse_args(["--image-dir", "x", "--out", "y"]).min_model_size is None


@pytest.mark.slow
@pytest.mark.parametrize("mapper", ["global", "hierarchical"])
def test_mappers_on_the_synthetic_scene(scene, matched, mapper):
    root, K, gt, names = scene
    out, cfg = matched
    res = reconstruction.reconstruct(root / "images", out, dataclasses.replace(cfg, mapper=mapper), progress=False,
                                     log=lambda s: None)
    assert res.best.num_reg_images() == len(names) and (out / "sparse" / "0" / "points3D.ply").is_file()
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert np.allclose(next(iter(rec.cameras.values())).params, colmap_pinhole(K))  # held fixed
    err = reconstruction.pose_errors(res.best, gt)
    assert err.rotation_errors.max() < 1.0
    assert f"{len(names)}/{len(names)} images registered" in reconstruction.format_summary(res)


@pytest.mark.slow
def test_cli_retrieval_pairs_and_global_mapper(scene, tmp_path, capsys):
    """``--pairs retrieval --num-neighbours 2 --mapper global``: every image registered,
    retrieval/ written and reused by a re-run; a codebook of the wrong dimension is one
    line naming it, exit 2."""
    root, K, _, names = scene
    params = ",".join(f"{v}" for v in colmap_pinhole(K))
    base = ["--image-dir", str(root / "images"), "--out", str(tmp_path / "out"), "--camera-model", "PINHOLE",
            "--camera-params", params, "--refine-intrinsics", "false", "--num-points", "600", "--max-image-size", "0",
            "--progress", "false", "--pairs", "retrieval", "--num-neighbours", "2"]
    assert reconstruct_cli.main(base + ["--mapper", "global"]) == 0
    out = capsys.readouterr().out
    assert f"{len(names)}/{len(names)} images registered" in out and "retrieval" in out.splitlines()[-1]
    pairs = read_pairs(tmp_path / "out" / "pairs.txt", names)
    assert read_pairs(tmp_path / "out" / "retrieval" / "pairs.txt", names) == pairs
    assert len(names) <= len(pairs) <= 2 * len(names)  # each image with 2, deduplicated
    for f in ("codebook.npy", "codebook.json", "global.npy", "global.json"):
        assert (tmp_path / "out" / "retrieval" / f).is_file()
    assert reconstruct_cli.main(base) == 0  # incremental, everything reused
    assert "codebook reused" in capsys.readouterr().out
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((4, 64), np.float32))
    assert reconstruct_cli.main(base + ["--codebook", str(wrong)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrong.npy has 64-dimensional centroids" in err[0]


@pytest.fixture(scope="module")
def fountain(strecha, tmp_path_factory):
    """Five photos of Strecha's fountain-P11 at 640 px, 1000 points, ground-truth K held
    fixed; features and matches computed once (skip without it; fail under CI=true)."""
    sdir = _need(strecha / "fountain-P11")
    names, gt, K, _ = load_scene(sdir)
    names = names[:5]
    out = tmp_path_factory.mktemp("fountain")
    cfg = ReconstructionConfig(features=matching.FeatureConfig(num_points=1000, max_image_size=640),
                               camera=CameraConfig("single", "PINHOLE", pinhole(K), refine_intrinsics=False))
    return sdir, names, gt, K, out, cfg


@pytest.mark.slow
def test_mappers_on_real_photos(fountain):
    """Every mapper registers the five photos, keeps K, and gets the relative rotations
    within 0.2 degrees of the ground truth (incremental: ~0.06 at this size)."""
    sdir, names, gt, K, out, cfg = fountain
    errs = {}
    for mapper in MAPPERS:
        res = reconstruction.reconstruct(sdir / "images", out, dataclasses.replace(cfg, mapper=mapper), progress=False,
                                         log=lambda s: None, image_list=names)
        assert res.best.num_reg_images() == 5, mapper
        assert np.allclose(next(iter(res.best.cameras.values())).params, pinhole(K)), mapper
        errs[mapper] = reconstruction.pose_errors(res.best, gt).summary()
        assert errs[mapper]["rot_max"] < 0.2, (mapper, errs[mapper])


@pytest.mark.slow
def test_global_mapper_calibrates_the_view_graph_without_intrinsics(fountain, monkeypatch):
    """With COLMAP's default cameras (no EXIF: a focal length guessed from the image size) the
    global mapper runs COLMAP's view-graph calibration first, and gets the cameras right; with
    known intrinsics it does not. (These five photos at 640 px also converge without it; all
    eleven at 1024 px gave a failed model without it: docs/matching.md, A mixed collection.)"""
    sdir, names, gt, K, out, cfg = fountain
    calls = []
    real = reconstruction.calibrate_view_graph
    monkeypatch.setattr(reconstruction, "calibrate_view_graph", lambda *a: calls.append(a) or real(*a))
    reconstruction.reconstruct(sdir / "images", out, dataclasses.replace(cfg, mapper="global"), progress=False,
                               log=lambda s: None, image_list=names)
    assert calls == []  # K given and fixed
    auto = dataclasses.replace(cfg, mapper="global", camera=CameraConfig())
    res = reconstruction.reconstruct(sdir / "images", out, auto, progress=False, log=lambda s: None, image_list=names)
    assert len(calls) == 1
    assert res.best.num_reg_images() == 5
    focal = next(iter(res.best.cameras.values())).params[0]
    assert abs(focal / K[0, 0] - 1) < 0.05  # full-resolution pixels; COLMAP's guess: 1.2 x 3072 = 3686
    err = reconstruction.pose_errors(res.best, gt).summary()
    assert err["rot_max"] < 0.5, err


@pytest.mark.slow
def test_verification_in_chunks_is_one_call(scene, matched, tmp_path, monkeypatch):
    """COLMAP's verification run a chunk of pairs at a time (for the progress bar) gives the
    two-view geometries of one call on all the pairs."""
    root, K, gt, names = scene
    out, cfg = matched
    pairs = read_pairs(out / "pairs.txt", names)
    assert len(pairs) > 10

    def verified(chunk: int):
        monkeypatch.setattr(reconstruction, "VERIFY_CHUNK", chunk)
        db = tmp_path / f"db{chunk}.db"
        reconstruction.write_database(db, root / "images", names, out / "features.h5", out / "matches.h5", pairs,
                                      cfg.camera)
        reconstruction.verify_pairs(cfg, db, pairs, tmp_path / "chunk.txt", progress=False)
        d = pycolmap.Database.open(str(db))
        try:
            pair_ids, geoms = d.read_two_view_geometries()
            return {int(p): (int(g.config), np.asarray(g.inlier_matches).tobytes()) for p, g in zip(pair_ids, geoms)}
        finally:
            d.close()

    whole, chunked = verified(10 ** 6), verified(3)
    assert len(whole) == len(pairs) and chunked == whole
    assert not (tmp_path / "chunk.txt").exists()
