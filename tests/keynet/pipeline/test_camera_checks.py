"""Cameras of ``keynet reconstruct`` (keynet.pipeline.reconstruction): the default rule
(``--camera-mode grouped``: photos of one size and the same EXIF camera, or none, share one
camera), the summary line saying what was assumed, and the checks of a finished model
(:func:`check_model`) that warn in one line with the option that fixes it. On real photos
(six of Strecha's fountain-P11 at 640 px, EXIF-free copies) against the ground truth, and
on that real model altered in one way at a time."""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from PIL import Image

from keynet.commands import reconstruct as reconstruct_cli
from keynet.pipeline import reconstruction
from keynet.pipeline.matching import FeatureConfig
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from sfm_strecha import load_scene  # noqa: E402

pycolmap.logging.minloglevel = 2
SIZE = 640  # longer side of the test copies (the originals: 3072 x 2048)
#: The bound of the default command on these six photos: every relative rotation within 1 degree
#: of the ground truth, the focal length within 3% of the true one.
ROTATION_BOUND_DEG = 1.0
FAST = ["--num-points", "1000", "--progress", "false"]


def reuse(folder: Path, tmp: Path) -> Path:
    """A new output folder with the features and matches of ``folder`` (reused, not recomputed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for f in ("features.h5", "matches.h5"):
        shutil.copy(folder / f, tmp / f)
    return tmp


def run_cli(args):
    """``keynet reconstruct ARGS``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = reconstruct_cli.main(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fountain(strecha, tmp_path_factory):
    """Six photos of fountain-P11 downscaled to 640 px and written without EXIF: (image folder,
    names, ground truth, the true focal length at that size)."""
    names, gt, K, size = load_scene(strecha / "fountain-P11")
    names = names[:6]
    images = tmp_path_factory.mktemp("fountain") / "images"
    images.mkdir()
    scale = SIZE / max(size)
    for n in names:
        im = cv2.imread(str(strecha / "fountain-P11" / "images" / n))
        cv2.imwrite(str(images / n), cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    assert not Image.open(images / names[0]).getexif()
    return images, names, gt, K[0, 0] * scale


@pytest.fixture(scope="module")
def default_run(fountain, tmp_path_factory):
    """``keynet reconstruct`` with no camera option on the six photos: (rc, stdout, stderr, out)."""
    images = fountain[0]
    out = tmp_path_factory.mktemp("out")
    return run_cli(["--image-dir", str(images), "--out", str(out)] + FAST) + (out,)


@pytest.mark.slow
def test_default_is_one_camera_and_right(fountain, default_run):
    """The default command on six EXIF-free photos of one size: one camera, the true focal
    length, every relative rotation within the bound, no warning, and the summary says what
    was assumed."""
    _, names, gt, f_true = fountain
    rc, out, err, folder = default_run
    assert rc == 0 and "6/6 images registered" in out
    assert "warning" not in err and "warning" not in out
    assumed = [line for line in out.splitlines() if line.startswith("cameras: ")]
    assert len(assumed) == 1 and "6 images -> 1 camera (--camera-mode grouped" in assumed[0]
    assert "no EXIF focal length" in assumed[0] and "--camera-mode per-image" in assumed[0]
    rec = pycolmap.Reconstruction(str(folder / "sparse" / "0"))
    assert len(rec.cameras) == 1
    focal = next(iter(rec.cameras.values())).mean_focal_length()
    assert abs(focal / f_true - 1) < 0.03, focal
    err_s = reconstruction.pose_errors(rec, gt).summary()
    assert err_s["rot_max"] < ROTATION_BOUND_DEG, err_s


@pytest.mark.slow
def test_wrong_camera_setting_warns_in_one_line(fountain, default_run, tmp_path):
    """A deliberately wrong camera setting (PINHOLE parameters in the order fx,cx,fy,cy, held
    fixed) still registers every photo, but the model is off by degrees: one warning line on
    stderr names the problem and the option to check; exit 0 (a model was made)."""
    images, _, gt, f_true = fountain
    folder = reuse(default_run[3], tmp_path / "out")
    wrong = f"{f_true:.1f},{SIZE / 2:.1f},{f_true:.1f},213.5"  # fx, cx, fy, cy: cx = f_true lands far right
    rc, out, err = run_cli(["--image-dir", str(images), "--out", str(folder), "--camera-model", "PINHOLE",
                            "--camera-params", wrong, "--refine-intrinsics", "false"] + FAST)
    assert rc == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: model 0 may be wrong: ")
    assert "principal point far from the image centre" in lines[0] and "--camera-params" in lines[0]
    assert "the given --camera-params, held fixed" in out
    rec = pycolmap.Reconstruction(str(folder / "sparse" / "0"))
    assert reconstruction.pose_errors(rec, gt).summary()["rot_max"] > 2 * ROTATION_BOUND_DEG  # it was wrong


@pytest.fixture(scope="module")
def model(fountain, default_run):
    """The default run's model and its database cameras (the priors)."""
    folder = default_run[3]
    priors, _ = reconstruction.database_cameras(folder / "database.db")
    return folder, priors


def fresh(folder):
    return pycolmap.Reconstruction(str(folder / "sparse" / "0"))


@pytest.mark.slow
def test_sound_model_has_no_finding(model):
    folder, priors = model
    rec = fresh(folder)
    assert reconstruction.check_model(rec, priors) == []
    assert reconstruction.share_behind_cameras(rec) == 0.0


@pytest.mark.slow
def test_focal_lengths_far_apart_among_look_alike_cameras(model, fountain, tmp_path):
    """One camera per image (COLMAP's auto without EXIF) with focal lengths that drifted
    apart, as reported: the finding names the spread and the option for one camera."""
    images = fountain[0]
    folder = reuse(model[0], tmp_path / "out")
    cfg = ReconstructionConfig(features=FeatureConfig(num_points=1000), camera=CameraConfig("per-image"))
    res = reconstruction.reconstruct(images, folder, cfg, progress=False, log=lambda s: None)
    priors, counts = reconstruction.database_cameras(folder / "database.db")
    assert len(priors) == 6 and "6 images -> 6 cameras (--camera-mode per-image" in res.cameras
    rec = res.best
    assert reconstruction.check_model(rec, priors, "per-image") == []  # sound here: focal lengths agree
    k = sorted(rec.cameras)[0]
    rec.cameras[k].focal_length = 1.6 * rec.cameras[k].focal_length
    found = reconstruction.check_model(rec, priors, "per-image")
    assert len(found) == 1 and "among 6 cameras of 640x427 photos" in found[0][0]
    assert "--camera-mode grouped" in found[0][1]
    line = reconstruction.model_warning(0, found)
    assert "\n" not in line and line.endswith("if they are one camera, --camera-mode grouped")
    rec.cameras[k].focal_length = 1.4 * rec.cameras[k].focal_length / 1.6  # within the factor
    assert reconstruction.check_model(rec, priors, "per-image") == []


@pytest.mark.slow
def test_implausible_focal_and_far_from_prior(model):
    folder, priors = model
    rec = fresh(folder)
    cam = next(iter(rec.cameras.values()))
    f = cam.focal_length
    cam.focal_length = 5e6  # the worst camera: a field of view of 0.007 degrees
    found = reconstruction.check_model(rec, priors, "grouped")
    assert len(found) == 1 and "implausible field of view" in found[0][0] and "--camera-params" in found[0][1]
    cam.focal_length = f
    given = {k: pycolmap.Camera.create_from_model_name(k, c.model.name, 2.2 * f, c.width, c.height)
             for k, c in priors.items()}
    for c in given.values():
        c.has_prior_focal_length = True
    found = reconstruction.check_model(rec, given, "grouped")
    assert len(found) == 1 and "far from its prior" in found[0][0] and "--refine-intrinsics false" in found[0][1]
    for c in given.values():
        c.focal_length = 1.8 * f  # within the factor 2
    assert reconstruction.check_model(rec, given, "grouped") == []


@pytest.mark.slow
def test_principal_point_and_points_behind(model):
    folder, priors = model
    rec = fresh(folder)
    cam = next(iter(rec.cameras.values()))
    cam.principal_point_x = cam.width * (0.5 + 0.26)
    found = reconstruction.check_model(rec, priors)
    assert len(found) == 1 and "principal point" in found[0][0]
    cam.principal_point_x = cam.width * (0.5 + 0.24)
    assert reconstruction.check_model(rec, priors) == []
    cam.principal_point_x = cam.width / 2
    centres = np.array([im.projection_center() for im in rec.images.values()])
    ids = sorted(rec.point3D_ids())
    for pid in ids[: len(ids) // 5]:  # a fifth of the points mirrored through the cameras
        rec.points3D[pid].xyz = 2 * centres.mean(0) - rec.points3D[pid].xyz
    share = reconstruction.share_behind_cameras(rec)
    assert 0.1 < share < 0.3
    found = reconstruction.check_model(rec, priors)
    assert len(found) == 1 and "behind their camera" in found[0][0]


def test_camera_groups_rule(tmp_path):
    """Same size and the same EXIF camera (or none) -> one group; another size, another EXIF
    make/model or focal length -> another group. ``grouped`` imports one camera a group."""
    def save(name, shape, exif=None):
        im = Image.fromarray(np.full(shape, 128, np.uint8))
        if exif is None:
            im.save(tmp_path / name)
            return
        ex = Image.Exif()
        ex[271], ex[272] = exif[0], exif[1]
        ex.get_ifd(0x8769)[37386] = exif[2]
        im.save(tmp_path / name, exif=ex)

    save("a.jpg", (48, 64))
    save("b.png", (48, 64))
    save("c.jpg", (64, 48))
    save("d.jpg", (48, 64), ("Acme", "One", 4.2))
    save("e.jpg", (48, 64), ("Acme", "One", 4.2))
    save("f.jpg", (48, 64), ("Acme", "One", 6.0))
    save("g.jpg", (48, 64), ("Acme", "Two", 4.2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert reconstruction.exif_camera(tmp_path / "d.jpg") == ("Acme", "One", "4.2")
    assert reconstruction.exif_camera(tmp_path / "a.jpg") == ("", "", "")
    groups = reconstruction.camera_groups(tmp_path, names, {})
    assert groups == [["a.jpg", "b.png"], ["c.jpg"], ["d.jpg", "e.jpg"], ["f.jpg"], ["g.jpg"]]
    sizes = {n: (64, 48) for n in names}  # the sizes given (from features.h5) are used as given
    assert reconstruction.camera_groups(tmp_path, names, sizes)[0] == ["a.jpg", "b.png", "c.jpg"]


def test_default_mode_and_choices():
    assert CameraConfig().mode == reconstruction.DEFAULT_CAMERA_MODE == "grouped"
    assert reconstruction.CAMERA_MODE_CHOICES == ("grouped", "auto", "single", "per-image", "per-folder")
    assert reconstruct_cli.parse_args(["--image-dir", "x", "--out", "y"]).camera_mode == "grouped"
    with pytest.raises(ValueError, match="choose one of grouped, auto"):
        CameraConfig(mode="shared")
