"""The affine shape in the pipeline (``--affine``, ``FeatureConfig(affine=...)``): the frame
conventions between our patches, kornia's LAFs and features.h5, the side file of the list
runner, AdaLAM on the whole frames, and the official pipeline untouched when it is off."""
from __future__ import annotations

import json

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from kornia.feature import extract_patches_simple, get_laf_orientation

import keynet
from hardnet.patches import extract_patches, patch_lafs
from keynet.pipeline import hloc_io, matching
from keynet.pipeline.extraction import Extractor, load_affine, load_descriptor, load_detector, load_orientation

ROOT = Path(__file__).resolve().parents[2]
TEST_IM = ROOT / "test_im" / "test_im.png"


def _shear_shapes(n: int, seed: int = 0) -> torch.Tensor:
    """Random lower-triangular, determinant-1 shapes with tilts up to 4."""
    g = np.random.default_rng(seed)
    a11 = np.exp(g.uniform(-0.7, 0.7, n))
    a21 = g.uniform(-0.8, 0.8, n)
    return torch.from_numpy(np.stack([np.stack([a11, np.zeros(n)], -1), np.stack([a21, 1 / a11], -1)], -2)).float()


def test_identity_shape_is_the_isotropic_patch():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 120, 140, generator=g)
    k = torch.tensor([[60.0, 50.0, 0.8], [70.3, 61.7, 1.2]])
    ori = torch.tensor([0.3, -2.0])
    eye = torch.eye(2).expand(2, 2, 2)
    assert torch.allclose(extract_patches(img, k, orientation=ori, shapes=eye), extract_patches(img, k, orientation=ori),
                          atol=1e-6)
    assert torch.allclose(patch_lafs(k, ori, shapes=eye), patch_lafs(k, ori))


def test_patches_lafs_and_kornia_agree_on_the_whole_frame():
    """Our patch through A @ R(theta) is kornia's patch of the LAF patch_lafs builds."""
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 200, 220, generator=g), 5, 1, 2)
    k = torch.tensor([[100.0, 90.0, 1.0], [110.5, 95.2, 0.7], [90.0, 120.0, 1.3]])
    ori = torch.tensor([0.0, 0.9, -2.4])
    shapes = _shear_shapes(3)
    ours = extract_patches(img, k, orientation=ori, shapes=shapes)
    lafs = patch_lafs(k, ori, shapes=shapes)
    theirs = extract_patches_simple(img, lafs, 32)[0]
    assert (ours - theirs).abs().max() < 1e-4
    # the centre and the area of the frame: the shape keeps the keypoint's scale
    half = 2.0 * k[:, 2] * 16 * 32 / 31
    assert torch.allclose(lafs[0, :, :, 2], k[:, :2])
    assert torch.allclose(torch.det(lafs[0, :, :, :2]), half ** 2, rtol=1e-5)
    # an upright shape leaves kornia's angle at minus ours
    up = patch_lafs(k, ori)
    assert torch.allclose(get_laf_orientation(up).flatten(), -torch.rad2deg(ori), atol=1e-3)


def test_a_known_shear_of_the_image_is_undone_by_the_frame():
    """Image B = image A sheared by J at a point: the patch of B through J / sqrt(det J) is A's
    isotropic patch (the round trip the convention promises, with the true shape)."""
    g = torch.Generator().manual_seed(2)
    a = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 240, 240, generator=g), 7, 1, 3)
    j = torch.tensor([[1.6, 0.0], [0.5, 1.0 / 1.6]])  # determinant 1, lower triangular
    c = torch.tensor([120.0, 120.0])
    # B(x) = A(c + J^-1 (x - c)): sample A on B's grid
    ys, xs = torch.meshgrid(torch.arange(240.0), torch.arange(240.0), indexing="ij")
    src = (torch.stack([xs - c[0], ys - c[1]], -1) @ torch.linalg.inv(j).T) + c
    grid = torch.stack([2 * src[..., 0] / 239 - 1, 2 * src[..., 1] / 239 - 1], -1)[None]
    b = torch.nn.functional.grid_sample(a, grid, align_corners=True, padding_mode="border")
    k = torch.tensor([[120.0, 120.0, 0.6]])
    pa = extract_patches(a, k)
    pb = extract_patches(b, k, shapes=j[None])
    wrong = extract_patches(b, k, shapes=torch.linalg.inv(j)[None])
    err, err_wrong = (pa - pb).abs().mean(), (pa - wrong).abs().mean()
    assert err < 0.02 and err_wrong > 3 * err


def test_load_affine_choices_and_errors(tmp_path):
    assert load_affine("none") is None and load_affine(None) is None
    assert load_affine("moments").method == "moments"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    with pytest.raises(Exception) as e:
        load_affine(str(bad))
    assert "bad.pt" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_extractor_composes_shape_then_orientation_then_descriptor():
    det = load_detector("default", num_points=150)
    aff = load_affine("moments")
    ori = load_orientation("learned")
    desc = load_descriptor("default")
    f = Extractor(det, desc, ori, aff).features(TEST_IM)
    assert f.shapes.shape == (len(f.keypoints), 2, 2) and f.shapes.dtype == np.float32
    assert np.allclose(np.linalg.det(f.shapes), 1.0, atol=1e-3) and np.all(f.shapes[:, 0, 1] == 0)
    assert np.all(f.shapes[:, 0, 0] > 0) and np.all(f.shapes[:, 1, 1] > 0)
    img = det.prepare(str(TEST_IM))
    # the orientation is the angle inside the shape, the descriptor is of the whole frame
    assert np.allclose(f.orientations, ori.estimate(img, f.keypoints, f.shapes))
    assert np.allclose(f.descriptors, desc.describe(img, f.keypoints, f.orientations, f.shapes), atol=1e-6)
    assert not np.allclose(f.descriptors, desc.describe(img, f.keypoints, f.orientations), atol=1e-3)
    lafs = f.lafs()[0].numpy()
    assert lafs.shape == (len(f.keypoints), 2, 3)
    kornia_patches = extract_patches_simple(torch.from_numpy(img)[None, None].float(), f.lafs(), 32)[0]
    assert np.allclose(desc.describe_patches(kornia_patches).numpy(), f.descriptors, atol=2e-3)
    # without the affine estimator: the official features, no shapes
    plain = Extractor(det, desc).features(TEST_IM)
    assert plain.shapes is None
    assert np.array_equal(plain.descriptors, keynet.extract(str(TEST_IM), det)[1])


@pytest.mark.slow
def test_extract_cli_writes_the_shapes_side_file_and_h5_frames(tmp_path):
    from keynet.commands import extract as cmd
    lst = tmp_path / "list.txt"
    lst.write_text(f"{TEST_IM}\n")
    rc = cmd.main(["--list-images", str(lst), "--results-dir", str(tmp_path / "npy"), "--affine", "moments",
                   "--num-points", "200", "--progress", "false"])
    assert rc == 0
    base = tmp_path / "npy" / "KeyNet_default" / str(TEST_IM).lstrip("/")
    kpts = np.load(str(base) + ".kpt.npy")
    shapes = np.load(str(base) + ".aff.npy")
    assert kpts.shape[1] == 4 and shapes.shape == (len(kpts), 2, 2)
    rc = cmd.main(["--list-images", str(lst), "--results-dir", str(tmp_path / "h5"), "--affine", "moments",
                   "--num-points", "200", "--progress", "false", "--output-format", "h5"])
    assert rc == 0
    f = hloc_io.read_features(tmp_path / "h5" / "KeyNet_default" / "features.h5", str(TEST_IM).lstrip("/"))
    assert f["lafs"].shape == (len(kpts), 2, 3)
    expected = patch_lafs(torch.from_numpy(kpts[:, :3]).float(), shapes=torch.from_numpy(shapes))[0].numpy()
    assert np.allclose(f["lafs"], expected, atol=1e-4)
    # the official run writes no side file and no lafs dataset
    rc = cmd.main(["--list-images", str(lst), "--results-dir", str(tmp_path / "off"), "--num-points", "200",
                   "--progress", "false"])
    assert rc == 0 and not Path(str(tmp_path / "off" / "KeyNet_default" / str(TEST_IM).lstrip("/")) + ".aff.npy").exists()


@pytest.mark.slow
def test_feature_config_affine_reaches_matching_and_adalam(tmp_path):
    cfg = keynet.FeatureConfig(affine="moments", num_points=300, max_image_size=0)
    assert json.loads(cfg.fingerprint())["affine"] == "moments"
    assert json.loads(keynet.FeatureConfig().fingerprint())["affine"] == "none"
    res = keynet.match_images(TEST_IM, TEST_IM, feature_config=cfg)
    assert res["lafs0"].shape == (len(res["kpts0"]), 2, 3)
    assert np.mean(res["matches"][:, 0] == res["matches"][:, 1]) > 0.95
    # AdaLAM on the whole frames: the same image gives back the identity matches
    d = keynet.Extractor(keynet.load_detector(num_points=300), keynet.load_descriptor(), None,
                         load_affine("moments")).features(TEST_IM)
    lafs = d.lafs()[0].numpy()
    m, _ = matching.match_descriptors(d.descriptors, d.descriptors, matching.MatcherConfig("adalam"), d.keypoints,
                                      d.keypoints, (512, 512), (512, 512), lafs0=lafs, lafs1=lafs)
    assert len(m) > 100 and np.mean(m[:, 0] == m[:, 1]) > 0.95
    assert math.isfinite(float(np.abs(lafs).max()))
