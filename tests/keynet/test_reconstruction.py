"""COLMAP reconstruction (keynet.pipeline.reconstruction, keynet reconstruct): database writing and its
pixel convention, an end-to-end reconstruction of a synthetic scene rendered from known
cameras, and bad inputs."""
from __future__ import annotations

import cv2
import numpy as np
import pycolmap
import pytest

from keynet.commands import match as match_features
from keynet.commands import reconstruct as reconstruct_cli
from keynet.pipeline import hloc_io, matching, reconstruction
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig, ReconstructionError, SceneNotReconstructed
from keynet.base.images import ImageReadError
from synthetic_scene import make_scene

pycolmap.logging.minloglevel = 2
FAST = matching.FeatureConfig(num_points=1000, max_image_size=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    K, gt, names = make_scene(root / "images")
    return root, K, gt, names


def colmap_pinhole(K):
    """Our K (top-left pixel centre at 0, 0) as COLMAP PINHOLE parameters (+0.5)."""
    return (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)


@pytest.fixture(scope="module")
def reconstructed(scene, tmp_path_factory):
    root, K, gt, names = scene
    out = tmp_path_factory.mktemp("out")
    cfg = ReconstructionConfig(features=FAST, camera=CameraConfig("single", "PINHOLE", colmap_pinhole(K), False))
    res = reconstruction.reconstruct(root / "images", out, cfg, progress=False, log=lambda s: None)
    return res, out, cfg


# ----------------------------------------------------------------------------- database
def test_database_keypoints_matches_and_cameras(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for n in names:
        cv2.imwrite(str(img_dir / n), np.full((48, 64), 100, np.uint8))
    rng = np.random.default_rng(0)
    kp = {n: np.column_stack([rng.uniform(0, 63, 20), rng.uniform(0, 47, 20), np.ones(20), np.ones(20)]) for n in names}
    with hloc_io.open_h5(tmp_path / "features.h5") as fd:
        for n in names:
            hloc_io.write_features(fd, n, kp[n], None, (64, 48))
    pairs = [("a.png", "b.png"), ("b.png", "c.png")]
    m_ab = np.array([[0, 3], [5, 7], [19, 0]])
    with hloc_io.open_h5(tmp_path / "matches.h5") as fd:
        hloc_io.write_matches(fd, "a.png", "b.png", m_ab, None, 20)
        hloc_io.write_matches(fd, "b.png", "c.png", np.zeros((0, 2)), None, 20)
    cam = CameraConfig("single", "PINHOLE", (100.0, 101.0, 32.0, 24.0), refine_intrinsics=False)
    db_path = tmp_path / "database.db"
    ids = reconstruction.write_database(db_path, img_dir, names, tmp_path / "features.h5",
                                        tmp_path / "matches.h5", pairs, cam)
    db = pycolmap.Database.open(str(db_path))
    try:
        assert db.num_images() == 3 and db.num_cameras() == 1
        c = db.read_all_cameras()[0]
        assert c.model_name == "PINHOLE" and np.allclose(c.params, [100, 101, 32, 24])
        assert (c.width, c.height) == (64, 48)
        for n in names:
            # COLMAP's convention: our (and hloc's) coordinates + 0.5
            assert np.allclose(db.read_keypoints(ids[n])[:, :2], kp[n][:, :2] + 0.5, atol=1e-4)
        assert np.array_equal(db.read_matches(ids["a.png"], ids["b.png"]), m_ab)
        assert db.num_matched_image_pairs() == 1  # an empty match set is not written
    finally:
        db.close()
    # one camera per image, COLMAP's default model when none is given
    reconstruction.write_database(db_path, img_dir, names, tmp_path / "features.h5", tmp_path / "matches.h5", pairs,
                                  CameraConfig("per-image"))
    db = pycolmap.Database.open(str(db_path))
    try:
        assert db.num_cameras() == 3 and db.read_all_cameras()[0].model_name == "SIMPLE_RADIAL"
    finally:
        db.close()


def test_camera_config_checks():
    with pytest.raises(ValueError, match="takes 4 parameters"):
        CameraConfig(model="PINHOLE", params=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="unknown camera model"):
        CameraConfig(model="PINHOL")
    with pytest.raises(ValueError, match="unknown camera mode"):
        CameraConfig(mode="shared")
    o = reconstruction.mapper_options(ReconstructionConfig(camera=CameraConfig(refine_intrinsics=False)))
    assert not o.ba_refine_focal_length and not o.ba_refine_extra_params and not o.mapper.abs_pose_refine_focal_length


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_synthetic_scene(scene, reconstructed):
    root, K, gt, names = scene
    res, out, cfg = reconstructed
    rec = res.best
    stats = reconstruction.model_stats(rec)
    assert stats["registered"] == len(names) == 6
    assert stats["points"] > 300 and stats["track_length"] > 3 and stats["reproj_error"] < 1.0
    for f in ("cameras.bin", "images.bin", "points3D.bin", "points3D.ply"):
        assert (out / "sparse" / "0" / f).is_file()
    assert pycolmap.Reconstruction(str(out / "sparse" / "0")).num_reg_images() == 6
    cam = rec.cameras[next(iter(rec.cameras))]
    assert np.allclose(cam.params, colmap_pinhole(K))  # held fixed
    err = reconstruction.pose_errors(rec, gt)
    s = err.summary()
    # the cameras span 3.6 m: centres to a few mm, relative rotations to a fraction of a degree
    assert err.registered == 6 and s["centre_max"] < 0.02 and s["rot_max"] < 0.5
    assert "6/6 images registered" in reconstruction.format_summary(res)


@pytest.mark.slow
def test_pose_errors_see_a_wrong_camera(scene, reconstructed):
    _, _, gt, names = scene
    res, _, _ = reconstructed
    bad = dict(gt)
    R, C = gt[names[2]]
    tilt, _ = cv2.Rodrigues(np.array([0.0, np.deg2rad(5.0), 0.0]))
    bad[names[2]] = (tilt @ R, C + np.array([0.3, 0, 0]))
    s = reconstruction.pose_errors(res.best, bad).summary()
    assert 4.5 < s["rot_max"] < 5.5 and s["centre_max"] > 0.1


@pytest.mark.slow
def test_rerun_reuses_features_and_matches(scene, reconstructed):
    root, _, _, names = scene
    res, out, cfg = reconstructed
    logs = []
    res2 = reconstruction.reconstruct(root / "images", out, cfg, progress=False, log=logs.append)
    assert any(f"{len(names)} image(s) reused" in line for line in logs)
    assert any("15 pair(s) reused" in line for line in logs)
    assert res2.best.num_reg_images() == 6


@pytest.mark.slow
def test_cli_fixed_intrinsics(scene, tmp_path, capsys):
    """The documented interface: --camera-model PINHOLE --camera-params fx,fy,cx,cy
    --refine-intrinsics false, the model under OUT; sequential pairs."""
    root, K, _, _ = scene
    params = ",".join(f"{v}" for v in colmap_pinhole(K))
    rc = reconstruct_cli.main(["--image-dir", str(root / "images"), "--out", str(tmp_path / "out"),
                               "--camera-model", "PINHOLE", "--camera-params", params, "--refine-intrinsics",
                               "false", "--num-points", "600", "--max-image-size", "0", "--pairs", "sequential",
                               "--window", "2", "--progress", "false"])
    out = capsys.readouterr().out
    assert rc == 0 and "6/6 images registered" in out
    rec = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse" / "0"))
    assert np.allclose(next(iter(rec.cameras.values())).params, colmap_pinhole(K))
    assert len((tmp_path / "out" / "pairs.txt").read_text().splitlines()) == 9  # 5 + 4 sequential pairs


# ----------------------------------------------------------------------------- bad inputs
def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_empty_and_missing_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconstructionError, match="no images"):
        reconstruction.reconstruct(tmp_path / "empty", tmp_path / "out")
    assert reconstruct_cli.main(["--image-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in one_line_error(capsys)
    assert reconstruct_cli.main(["--image-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "image folder not found" in one_line_error(capsys)


@pytest.mark.slow
def test_unreadable_image(scene, tmp_path, capsys):
    """One bad file does not sink the run: it is skipped with one warning naming it, and the
    others are reconstructed (or, with too few left, one error); --strict stops at it; no
    empty features.h5 and no output folder are left by a run that stops early."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "0000_broken.png").write_bytes(b"\x89PNG truncated")
    src = scene[0] / "images" / "0000.png"
    (root / "0001.png").write_bytes(src.read_bytes())
    with pytest.raises(ImageReadError, match="0000_broken.png"):
        reconstruction.reconstruct(root, tmp_path / "out", ReconstructionConfig(features=FAST, strict=True),
                                   progress=False)
    assert not (tmp_path / "out" / "features.h5").exists()  # the stage left no empty file
    with pytest.raises(ReconstructionError, match="1 usable image"):
        reconstruction.reconstruct(root, tmp_path / "out2", ReconstructionConfig(features=FAST), progress=False,
                                   log=lambda s: None)
    warned = [line for line in capsys.readouterr().err.splitlines() if "0000_broken.png" in line]
    assert len(warned) == 1 and warned[0].startswith("[WARNING] skipped"), warned
    assert reconstruct_cli.main(["--image-dir", str(root), "--out", str(tmp_path / "o"), "--progress", "false",
                                 "--strict"]) == 2
    assert "0000_broken.png" in one_line_error(capsys)
    assert reconstruct_cli.main(["--image-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o3").exists()  # stopped at argument checking: nothing created
    capsys.readouterr()


@pytest.mark.slow
def test_bad_image_is_skipped_in_a_scene(scene, tmp_path, capfd):
    """A corrupt file among the scene's images: match and reconstruct go on without it, and
    the Python API is quiet (no COLMAP log) unless verbose."""
    root, K, _, names = scene
    imgs = tmp_path / "images"
    imgs.mkdir()
    for n in names:
        (imgs / n).write_bytes((root / "images" / n).read_bytes())
    (imgs / "zz_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rc = match_features.main(["--image-dir", str(imgs), "--out", str(tmp_path / "m"), "--num-points", "600",
                              "--max-image-size", "0", "--pairs", "sequential", "--window", "1", "--progress", "false"])
    out, err = capfd.readouterr()
    assert rc == 0 and "1 skipped" in out and sum("zz_corrupt.jpg" in x for x in err.splitlines()) == 1, (out, err)
    with hloc_io.open_h5(tmp_path / "m" / "matches.h5", "r") as fd:
        assert len(fd.keys()) > 0
    cfg = ReconstructionConfig(features=FAST, camera=CameraConfig("single", "PINHOLE", colmap_pinhole(K), False))
    capfd.readouterr()
    res = reconstruction.reconstruct(imgs, tmp_path / "r", cfg, progress=False, log=lambda s: None)
    assert res.best.num_reg_images() == len(names) and "zz_corrupt.jpg" not in res.image_names
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if "zz_corrupt.jpg" in line], err  # only our one warning, no COLMAP log


def test_empty_pairs_file(scene, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n")
    args = ["--image-dir", str(scene[0] / "images"), "--out", str(tmp_path / "o"), "--pairs-file", str(pairs)]
    assert reconstruct_cli.main(args) == 2
    assert "pairs file is empty" in one_line_error(capsys)
    assert match_features.main(args) == 2
    assert "pairs file is empty" in one_line_error(capsys)


def test_scene_that_does_not_reconstruct(tmp_path, capsys):
    """Two unrelated noise images: no verified pair, no model; exit code 1 and a line
    saying how many images registered."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (160, 200)).astype(np.float32), (0, 0), 1.5 + i)
        cv2.imwrite(str(root / f"{i}.png"), noise.astype(np.uint8))
    cfg = ReconstructionConfig(features=matching.FeatureConfig(num_points=300, max_image_size=0))
    with pytest.raises(SceneNotReconstructed, match="0 of 2 images registered"):
        reconstruction.reconstruct(root, tmp_path / "out", cfg, progress=False, log=lambda s: None)
    rc = reconstruct_cli.main(["--image-dir", str(root), "--out", str(tmp_path / "out"), "--num-points", "300",
                               "--max-image-size", "0", "--progress", "false"])
    assert rc == 1 and "did not reconstruct" in one_line_error(capsys)
