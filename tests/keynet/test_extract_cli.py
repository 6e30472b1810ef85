"""extract_multiscale_features.py end to end on small images, and every bad input."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import keynet
from hardnet import HardNet, save_hardnet
from keynet.base.files import atomic_save_npy, feature_paths

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "extract_multiscale_features.py"
# Small and fast settings; the defaults are covered by the parity test.
FAST = ["--num-points", "100", "--pyramid-levels", "1", "--upsampled-levels", "0", "--no-progress"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


@pytest.fixture(scope="module")
def tf_weights(reference_dir):
    return reference_dir / "keynet_tf_official.npz"


@pytest.fixture()
def images(tmp_path):
    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    crop = cam[100:260, 150:330]
    cv2.imwrite(str(tmp_path / "grey.png"), crop)
    colour = cv2.merge([crop, np.flipud(crop).copy(), crop // 2])
    cv2.imwrite(str(tmp_path / "colour.jpg"), colour)
    cv2.imwrite(str(tmp_path / "deep.png"), crop.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "tiny.png"), crop[:20, :20])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    jpg = (tmp_path / "colour.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])  # OpenCV would decode it, grey below
    return tmp_path


def test_python_api(tf_weights, images):
    det = keynet.load_detector(tf_weights, num_points=50, pyramid_levels=1, upsampled_levels=0, device="cpu")
    k8 = det.detect(str(images / "grey.png"))
    k16 = det.detect(str(images / "deep.png"))
    assert k8.shape[1] == 4 and 0 < len(k8) <= 50
    np.testing.assert_allclose(k8, k16, rtol=1e-5)  # 16-bit image scaled by its max: same points
    kp, desc = keynet.Extractor(det, None).extract(str(images / "colour.jpg"))
    assert desc is None and len(kp) > 0
    # colour arrays: RGB by default; channel_order='bgr' for cv2.imread's arrays equals the file
    bgr = cv2.imread(str(images / "colour.jpg"))
    np.testing.assert_array_equal(det.detect(bgr, channel_order="bgr"), det.detect(str(images / "colour.jpg")))
    np.testing.assert_array_equal(det.detect(bgr[:, :, ::-1].copy()), det.detect(bgr, channel_order="bgr"))
    assert not np.array_equal(det.detect(bgr), det.detect(bgr, channel_order="bgr"))
    with pytest.raises(ValueError, match="channel_order"):
        det.detect(bgr, channel_order="gbr")
    with pytest.raises(keynet.ImageReadError, match="truncated JPEG.*truncated.jpg"):
        det.detect(str(images / "truncated.jpg"))


@pytest.mark.slow
def test_cli_end_to_end(tf_weights, images, tmp_path):
    lst = images / "list.txt"
    lst.write_text("grey.png\ncolour.jpg\ndeep.png\n")
    out = tmp_path / "out"
    # a HardNet in the project format (untrained weights are fine for the plumbing)
    torch.manual_seed(0)
    save_hardnet(tmp_path / "hn.pt", HardNet(), {"note": "random init, test only"})
    r = run("--list-images", lst, "--results-dir", out, "--network-version", "v", "--checkpoint-det-dir", tf_weights,
            "--checkpoint-desc-dir", tmp_path / "hn.pt", *FAST)
    assert r.returncode == 0, r.stderr
    for name in ("grey.png", "colour.jpg", "deep.png"):
        kp_path, ds_path = feature_paths(out, "v", name)
        kp, ds = np.load(kp_path), np.load(ds_path)
        assert kp.shape == (len(kp), 4) and 0 < len(kp) <= 100 and np.all(np.diff(kp[:, 3]) <= 0)
        assert ds.shape == (len(kp), 128) and np.allclose(np.linalg.norm(ds, axis=1), 1, atol=1e-4)
    assert "3 written" in r.stdout and "wrote" in r.stdout
    # second run skips, --overwrite redoes
    r = run("--list-images", lst, "--results-dir", out, "--network-version", "v", "--checkpoint-det-dir", tf_weights,
            "--checkpoint-desc-dir", tmp_path / "hn.pt", *FAST)
    assert r.returncode == 0 and "0 written, 3 skipped" in r.stdout
    r = run("--list-images", lst, "--results-dir", out, "--network-version", "v", "--checkpoint-det-dir", tf_weights,
            "--checkpoint-desc-dir", "none", "--overwrite", *FAST)
    assert r.returncode == 0 and "3 written" in r.stdout and "descriptors skipped" in r.stderr
    assert not feature_paths(out, "v", "grey.png")[1].exists()  # stale descriptors removed
    assert not list(out.rglob("*.tmp"))


def test_cli_switches(tf_weights, images, tmp_path):
    lst = images / "list.txt"
    lst.write_text("grey.png\n")
    r = run("--list-images", lst, "--results-dir", tmp_path / "o", "--checkpoint-det-dir", tf_weights,
            "--checkpoint-desc-dir", "none", "--extract-MS", "false", "--order-coord", "yxsr", "--num-points", "40",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    kp = np.load(feature_paths(tmp_path / "o", "KeyNet_default", "grey.png")[0])
    assert np.allclose(kp[:, 2], kp[0, 2]) and abs(kp[0, 2] - 1) < 1e-6  # single scale really
    det = keynet.load_detector(tf_weights, num_points=40, multi_scale=False, device="cpu")
    ref = det.detect(str(images / "grey.png"))
    np.testing.assert_allclose(kp, ref[:, [1, 0, 2, 3]])  # yxsr order


@pytest.mark.slow
def test_cli_bad_inputs(tf_weights, images, tmp_path):
    lst = images / "list.txt"
    lst.write_text("grey.png\nmissing.png\ncorrupt.png\ntiny.png\ntruncated.jpg\n")
    r = run("--list-images", lst, "--results-dir", tmp_path / "o", "--checkpoint-det-dir", tf_weights,
            "--checkpoint-desc-dir", "none", *FAST)
    assert r.returncode == 1
    assert "1 written" in r.stdout and "4 failed" in r.stdout
    assert "missing.png" in r.stderr and "corrupt.png" in r.stderr and "tiny.png" in r.stderr
    assert "truncated JPEG" in r.stderr and "truncated.jpg" in r.stderr
    assert "smaller than Key.Net needs" in r.stderr
    (images / "empty.txt").write_text("\n# nothing\n")
    r = run("--list-images", images / "empty.txt", "--checkpoint-det-dir", tf_weights, *FAST)
    assert r.returncode == 2 and "empty" in r.stderr
    r = run("--list-images", images / "nope.txt", "--checkpoint-det-dir", tf_weights, *FAST)
    assert r.returncode == 2 and "nope.txt" in r.stderr
    r = run("--list-images", lst, "--checkpoint-det-dir", images / "corrupt.png", *FAST)
    assert r.returncode == 2 and "corrupt.png" in r.stderr and "Traceback" not in r.stderr
    r = run("--list-images", lst, "--checkpoint-det-dir", tf_weights, "--checkpoint-desc-dir", tf_weights, *FAST)
    assert r.returncode == 2 and "HardNet" in r.stderr and "Traceback" not in r.stderr
    r = run("--list-images", lst, "--extract-MS", "maybe")
    assert r.returncode == 2 and "boolean" in r.stderr


@pytest.mark.slow
def test_default_run_without_shipped_weights_says_what_to_pass(tmp_path):
    if (ROOT / "pretrained_nets" / "keynet.pt").exists():
        r = run("--results-dir", tmp_path / "o", "--no-progress")
        assert r.returncode == 0, r.stderr
        assert "test_im.png.kpt.npy" in r.stdout
    else:
        r = run("--results-dir", tmp_path / "o")
        assert r.returncode == 2 and "--checkpoint-det-dir" in r.stderr


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("interrupted")

    target = tmp_path / "a.npy"
    atomic_save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError):
        atomic_save_npy(target, Boom())
    assert np.array_equal(np.load(target), np.arange(3)) and not list(tmp_path.glob("*.tmp"))


def test_cli_data_dir_keeps_official_layout(tf_weights, images, tmp_path):
    lst = tmp_path / "hp.txt"
    lst.write_text("hpatches-sequences-release/grey.png\n")
    r = run("--list-images", lst, "--data-dir", images, "--results-dir", tmp_path / "o", "--network-version", "v",
            "--checkpoint-det-dir", tf_weights, "--checkpoint-desc-dir", "none", *FAST)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "v" / "hpatches-sequences-release" / "grey.png.kpt.npy").is_file()


def test_atomic_writes_use_the_usual_file_mode(tmp_path):
    import os

    atomic_save_npy(tmp_path / "m.npy", np.zeros(2))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.npy").stat().st_mode & 0o777 == 0o666 & ~mask


def test_one_call_api_with_shipped_weights(images):
    if not (ROOT / "pretrained_nets" / "keynet.pt").exists():
        pytest.skip("no shipped Key.Net weights")
    img = cv2.imread(str(images / "grey.png"), cv2.IMREAD_GRAYSCALE)
    kp, desc = keynet.extract(img)
    assert kp.shape[1] == 4 and len(kp) > 0 and np.all(np.diff(kp[:, 3]) <= 0)
    if (ROOT / "pretrained_nets" / "hardnet.pt").exists():
        assert desc.shape == (len(kp), 128)
    kp2, none = keynet.extract(img, descriptor="none")
    assert none is None and np.array_equal(kp, kp2)


@pytest.mark.slow
def test_large_image_memory_is_bounded(tmp_path):
    """A 4000x3000 photo through the default extraction (shipped Key.Net + HardNet, 6
    pyramid levels, the largest 4800x3600) stays far below a 24 GiB machine: the network
    runs in strips and the descriptors in chunks. Peak RSS of the whole process < 3 GiB
    (benchmarks/large_image.py: 1.4 GiB; the whole-image computation needed 4.5 GiB)."""
    import resource

    rng = np.random.default_rng(0)
    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(cam, (4000, 3000), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    (tmp_path / "list.txt").write_text("big.png\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = run("--list-images", tmp_path / "list.txt", "--data-dir", tmp_path, "--results-dir", tmp_path / "out",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    assert before / 2**20 < 3.0, "an earlier child process already used more than the bound"
    assert peak_gib < 3.0, f"extraction of a 4000x3000 image peaked at {peak_gib:.1f} GiB"
    kpt, dsc = feature_paths(tmp_path / "out", "KeyNet_default", "big.png")
    k, d = np.load(kpt), np.load(dsc)
    assert 1400 <= len(k) <= 1500 and k.shape[1] == 4 and d.shape == (len(k), 128)
    assert k[:, 0].max() > 3000 and k[:, 1].max() > 2000  # points all over the image


def _torchrun(args, cwd):
    with socket.socket() as sk:  # a fresh free port for each launch's rendezvous
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=180,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_torchrun_two_processes_share_the_list_and_resume(tmp_path):
    """torchrun with 2 CPU processes: every image extracted once (each process takes every
    2nd line), one summary printed by the first process; a re-launch skips what is done."""
    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    names = []
    for i in range(5):
        names.append(f"im{i}.png")
        cv2.imwrite(str(tmp_path / names[-1]), cam[i * 20:i * 20 + 160, i * 30:i * 30 + 200])
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    args = ["--list-images", tmp_path / "list.txt", "--results-dir", tmp_path / "o", "--checkpoint-desc-dir", "none",
            "--progress", "false", "--num-points", "100"]
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0, r.stdout[-1000:] + r.stderr[-2000:]
    assert r.stdout.count("Done in") == 1 and "5 written, 0 skipped" in r.stdout and "2 processes" in r.stdout
    assert all((tmp_path / "o" / "KeyNet_default" / f"{n}.kpt.npy").is_file() for n in names)
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0 and "0 written, 5 skipped" in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_h5_from_a_folder_is_merged_into_one_file(tmp_path):
    """torchrun over a folder into HDF5: the per-process files are merged into one
    features.h5 (what match / reconstruct read), named by the relative paths; a re-launch
    skips the merged images."""
    from keynet.pipeline import hloc_io

    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    names = []
    for i in range(5):
        names.append(f"{'ab'[i % 2]}/{i:04d}.png")
        (tmp_path / "photos" / names[-1]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "photos" / names[-1]), cam[i * 20:i * 20 + 160, i * 30:i * 30 + 200])
    args = ["--image-dir", tmp_path / "photos", "--results-dir", tmp_path / "o", "--descriptor", "none",
            "--output-format", "h5", "--progress", "false", "--num-points", "100"]
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0, r.stdout[-1000:] + r.stderr[-2000:]
    out = tmp_path / "o" / "KeyNet_default"
    assert sorted(p.name for p in out.iterdir()) == ["features.h5"]
    with hloc_io.open_h5(out / "features.h5", "r") as fd:
        assert sorted(hloc_io.complete_names(fd)) == sorted(names) and "extractor" in fd.attrs
    r = _torchrun(args, tmp_path)
    assert r.returncode == 0 and "0 written, 5 skipped" in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_oriented_extraction_round_trip(tf_weights, images, tmp_path):
    """--upright false: .kpt.npy stays N x 4, the angles go to .ori.npy and equal the API's,
    the descriptors are those of rotated patches, and hloc files / LAFs carry the same angles."""
    from hardnet import OrientationEstimator, OriNet, save_orinet
    from keynet.base.files import orientation_path
    from keynet.pipeline import hloc_io

    torch.manual_seed(0)
    save_hardnet(tmp_path / "hn.pt", HardNet(), {"note": "random init, test only"})
    save_orinet(tmp_path / "ori.pt", OriNet(), {"note": "random init, test only"})
    lst = images / "list.txt"
    lst.write_text("grey.png\n")
    out = tmp_path / "out"
    common = ["--list-images", lst, "--results-dir", out, "--network-version", "v", "--checkpoint-det-dir",
              tf_weights, "--checkpoint-desc-dir", tmp_path / "hn.pt", *FAST]
    r = run(*common, "--upright", "false", "--orientation", tmp_path / "ori.pt")
    assert r.returncode == 0, r.stderr
    kp_path, ds_path = feature_paths(out, "v", "grey.png")
    kp, ds, ori = np.load(kp_path), np.load(ds_path), np.load(orientation_path(out, "v", "grey.png"))
    assert kp.shape[1] == 4 and ori.shape == (len(kp),) and ori.dtype == np.float32
    # --upright false detects with rotation-averaged score maps (--rotation-average auto) and
    # moves the points to their sub-pixel maxima (--subpixel auto)
    det = keynet.load_detector(tf_weights, num_points=100, pyramid_levels=1, upsampled_levels=0, device="cpu",
                               rotation_average=True, subpixel=True)
    desc = keynet.load_descriptor(tmp_path / "hn.pt", device="cpu")
    est = keynet.load_orientation(tmp_path / "ori.pt", device="cpu")
    f = keynet.Extractor(det, desc, est).features(str(images / "grey.png"))
    np.testing.assert_allclose(kp, f.keypoints)
    np.testing.assert_allclose(ori, f.orientations, atol=1e-4)
    np.testing.assert_allclose(ds, f.descriptors, atol=1e-5)
    official = keynet.load_detector(tf_weights, num_points=100, pyramid_levels=1, upsampled_levels=0,
                                    device="cpu", rotation_average=True).detect(str(images / "grey.png"))
    np.testing.assert_array_equal(kp[:, 2:], official[:, 2:])
    assert np.abs(kp[:, :2] - official[:, :2]).max() > 0.05
    r = run(*common, "--upright", "false", "--orientation", tmp_path / "ori.pt", "--subpixel", "false",
            "--results-dir", tmp_path / "out_official")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(feature_paths(tmp_path / "out_official", "v", "grey.png")[0]), official)
    upright = keynet.Extractor(det, desc).features(str(images / "grey.png"))
    assert upright.orientations is None and np.abs(upright.descriptors - f.descriptors).max() > 0.05
    # LAFs: kornia's angle is the negative of ours; back to the same keypoints and angles
    from kornia.feature import get_laf_orientation
    from hardnet.patches import lafs_to_keypoints

    lafs = f.lafs()
    kornia_deg = get_laf_orientation(lafs).flatten().numpy()
    assert np.abs(((kornia_deg + ori + 180.0) % 360.0) - 180.0).max() < 1e-3
    k3, o3 = lafs_to_keypoints(lafs)
    np.testing.assert_allclose(k3.numpy(), kp[:, :3], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.rad2deg(o3.numpy()) % 360.0, ori, atol=1e-3)
    # hloc features.h5
    with hloc_io.open_h5(tmp_path / "f.h5", "a") as fd:
        hloc_io.write_features(fd, "grey.png", kp, ds, (180, 160), orientations=ori)
    back = hloc_io.read_features(tmp_path / "f.h5", "grey.png")
    np.testing.assert_array_equal(back["orientations"], ori)
    # an upright re-run removes the stale angles; an oriented run needs its .ori.npy to skip
    r = run(*common, "--overwrite")
    assert r.returncode == 0 and not orientation_path(out, "v", "grey.png").exists()
    r = run(*common, "--upright", "false", "--orientation", "gradient")
    assert r.returncode == 0 and "1 written" in r.stdout
    kp = np.load(kp_path)
    grad = np.load(orientation_path(out, "v", "grey.png"))
    np.testing.assert_allclose(grad, OrientationEstimator("gradient", device="cpu").estimate(
        det.prepare(str(images / "grey.png")), kp), atol=1e-3)
    r = run(*common, "--upright", "false", "--orientation", tmp_path / "missing.pt")
    assert r.returncode == 2 and "missing.pt" in r.stderr and "Traceback" not in r.stderr


def test_h5_output_resumes_and_matches_the_npy_outputs(tf_weights, images, tmp_path):
    """One hloc-layout HDF5 file per process instead of two .npy files per image."""
    from keynet.pipeline import hloc_io
    from keynet.pipeline.extraction import h5_output_path, run_extraction_h5
    from keynet.base.runner import Shard

    det = keynet.load_detector(tf_weights, num_points=60, pyramid_levels=1, upsampled_levels=0, device="cpu")
    torch.manual_seed(0)
    ex = keynet.Extractor(det, keynet.load_descriptor("none"))
    lst = images / "list.txt"
    lst.write_text("grey.png\ncolour.jpg\ncorrupt.png\n")
    s = run_extraction_h5(lst, tmp_path / "o", "v", ex, progress=False)
    assert sorted(s.written) == ["colour.jpg", "grey.png"] and [f for f, _ in s.failed] == ["corrupt.png"]
    out = h5_output_path(tmp_path / "o", "v")
    assert out.name == "features.h5"
    f = hloc_io.read_features(out, "grey.png")
    ref = ex.features(str(images / "grey.png"))
    np.testing.assert_allclose(f["keypoints"], ref.keypoints[:, :2], atol=1e-4)
    np.testing.assert_allclose(f["scales"], ref.keypoints[:, 2], rtol=1e-6)
    assert tuple(f["image_size"]) == (180, 160) and "orientations" not in f
    again = run_extraction_h5(lst, tmp_path / "o", "v", ex, progress=False)
    assert sorted(again.skipped) == ["colour.jpg", "grey.png"] and not again.written
    shard = Shard(rank=1, world=2)
    assert h5_output_path(tmp_path / "o", "v", shard).name == "features.rank1.h5"
    part = run_extraction_h5(lst, tmp_path / "o", "v", ex, progress=False, shard=shard)
    assert part.skipped == ["colour.jpg"] and not part.written  # features.h5 holds it already (a re-launch)
    part = run_extraction_h5(lst, tmp_path / "o2", "v", ex, progress=False, shard=shard)
    assert part.written == ["colour.jpg"]  # every 2nd line


@pytest.mark.slow
def test_cli_h5_output_and_absolute_list_lines(tf_weights, images, tmp_path):
    lst = tmp_path / "abs.txt"
    lst.write_text(f"{images / 'grey.png'}\n")
    r = run("--list-images", lst, "--results-dir", tmp_path / "o", "--network-version", "v",
            "--detector", tf_weights, "--descriptor", "none", *FAST)
    kp_path = feature_paths(tmp_path / "o", "v", str(images / "grey.png"))[0]
    assert r.returncode == 0 and kp_path.is_file() and f"wrote {kp_path}" in r.stdout
    r = run("--list-images", lst, "--results-dir", tmp_path / "o", "--network-version", "v",
            "--detector", tf_weights, "--descriptor", "none", "--output-format", "h5", *FAST)
    assert r.returncode == 0 and (tmp_path / "o" / "v" / "features.h5").is_file(), r.stderr


@pytest.mark.slow
def test_cli_image_dir_names_images_by_their_relative_path(tf_weights, images, tmp_path):
    """--image-dir: every image below a folder (recursive), named by its path relative to it,
    so that a/0000.png and b/0000.png stay apart; a bad image is reported once and skipped."""
    from keynet.pipeline import hloc_io

    src = tmp_path / "photos"
    for sub in ("a", "b/deep"):
        (src / sub).mkdir(parents=True)
    crop = cv2.imread(str(images / "grey.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(src / "a" / "0000.png"), crop)
    cv2.imwrite(str(src / "b" / "deep" / "0000.png"), np.fliplr(crop).copy())
    (src / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    (src / "notes.txt").write_text("not an image")
    common = ["--image-dir", src, "--detector", tf_weights, "--descriptor", "none", "--network-version", "v", *FAST]
    r = run(*common, "--results-dir", tmp_path / "o")
    assert r.returncode == 1, r.stderr  # one image failed
    for name in ("a/0000.png", "b/deep/0000.png"):
        assert feature_paths(tmp_path / "o", "v", name)[0].is_file(), name
    assert not feature_paths(tmp_path / "o", "v", "b/broken.png")[0].exists()
    assert sum("broken.png" in line for line in (r.stdout + r.stderr).splitlines()) == 1, r.stderr  # named once
    assert "2 written" in r.stdout and "1 failed" in r.stdout
    r = run(*common, "--results-dir", tmp_path / "h", "--output-format", "h5")
    assert r.returncode == 1
    with hloc_io.open_h5(tmp_path / "h" / "v" / "features.h5", "r") as fd:
        assert sorted(hloc_io.complete_names(fd)) == ["a/0000.png", "b/deep/0000.png"]
    r = run("--image-dir", src / "a" / "0000.png", "--results-dir", tmp_path / "x", *FAST)
    assert r.returncode == 2 and "not a folder" in r.stderr and "0000.png" in r.stderr
    r = run("--image-dir", src, "--list-images", images / "list.txt", *FAST)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_zero_points_is_refused_in_one_line(tmp_path):
    r = run("--num-points", "0", "--results-dir", tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--num-points" in r.stderr and "positive integer" in r.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_extract_h5_is_reused_by_the_matching_stage(tf_weights, images, tmp_path):
    """One feature stage: ``keynet extract --output-format h5`` writes the settings'
    fingerprint, so that match / reconstruct with the same FeatureConfig reuse the file and
    compute nothing; other settings start it again."""
    from keynet.pipeline.extraction import FeatureConfig
    from keynet.pipeline.matching import extract_features

    desc = tmp_path / "hardnet.pt"
    torch.manual_seed(0)
    save_hardnet(desc, HardNet(), {})
    lst = images / "two.txt"
    lst.write_text("grey.png\ncolour.jpg\n")
    r = run("--list-images", lst, "--results-dir", tmp_path / "o", "--network-version", "v", "--detector", tf_weights,
            "--descriptor", desc, "--num-points", "80", "--pyramid-levels", "1", "--upsampled-levels", "0",
            "--output-format", "h5", "--no-progress")
    assert r.returncode == 0, r.stderr
    h5 = tmp_path / "o" / "v" / "features.h5"
    same = FeatureConfig(detector=str(tf_weights), descriptor=str(desc), num_points=80, max_image_size=0,
                         subpixel=None, pyramid_levels=1, upsampled_levels=0, device="cpu")
    s = extract_features(images, ["grey.png", "colour.jpg"], h5, same, progress=False)
    assert sorted(s.reused) == ["colour.jpg", "grey.png"] and not s.done
    other = FeatureConfig(**{**same.__dict__, "num_points": 40})
    s = extract_features(images, ["grey.png"], h5, other, progress=False)
    assert s.done == ["grey.png"] and not s.reused


def test_one_rule_of_upright_false():
    """An orientation turns on the rotation average and the sub-pixel maxima unless they are
    set: FeatureConfig.detector_settings, the one place (extract's auto, match's defaults)."""
    from keynet.pipeline.extraction import EXTRACT_DEFAULTS, FeatureConfig

    up = EXTRACT_DEFAULTS.detector_settings()
    assert up["rotation_average"] is False and up["subpixel"] is False and up["num_points"] == 1500
    ori = FeatureConfig(**{**EXTRACT_DEFAULTS.__dict__, "orientation": "gradient"}).detector_settings()
    assert ori["rotation_average"] is True and ori["subpixel"] is True
    fixed = FeatureConfig(orientation="gradient", rotation_average=False, subpixel=False).detector_settings()
    assert fixed["rotation_average"] is False and fixed["subpixel"] is False
    assert FeatureConfig().detector_settings()["subpixel"] is True  # match / reconstruct: sub-pixel by default
    # the fingerprint records the resolved rule and every setting (tests/keynet/pipeline/test_fingerprint.py)
    assert '"rotation_average": false' in FeatureConfig().fingerprint()
    assert '"pyramid_levels": 5' in FeatureConfig().fingerprint()
    assert '"pyramid_levels": 2' in FeatureConfig(pyramid_levels=2).fingerprint()
