"""Synthetic pair generator: homography, geometry of the pairs, rejection, cache + manifest."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from keynet import data as kd
from keynet.base import augment
from keynet.base import files as kfiles


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 6 + 1, w // 6 + 1, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(6):
        h, w = (260, 300) if i % 2 else (300, 260)
        cv2.imwrite(str(d / f"img{i}.png"), _texture(h, w, i))
    return d


def small_cfg(**kw):
    base = dict(patch_size=64, val_patch_size=96, num_train=6, num_val=2, val_images=2, pairs_per_image=2, seed=3)
    base.update(kw)
    return kd.PairConfig(**base)


def test_homography_composition():
    rng = np.random.default_rng(0)
    h = augment.random_homography(rng, max_angle=0.0, max_scale=1.5, max_shearing=0.0, min_scale=1.5)
    assert np.allclose(h, np.diag([1.5, 1.5, 1.0]))
    hs = [augment.random_homography(rng) for _ in range(200)]
    scales = [np.sqrt(abs(np.linalg.det(x[:2, :2]))) for x in hs]  # shear has det 1
    assert 0.5 <= min(scales) and max(scales) <= 2.0


def test_float_parameters_stay_float():
    cfg = kd.PairConfig(max_scale=3, max_shearing=1)
    assert isinstance(cfg.max_scale, float) and isinstance(cfg.max_shearing, float)
    from train import parse_config
    cfg = parse_config(["--data-dir", "x", "--max-scale", "3.5", "--max-shearing", "0.5", "--max-angle", "60"]).data
    assert cfg.max_scale == 3.5 and cfg.max_shearing == 0.5 and cfg.max_angle == 60.0


def test_pair_geometry_matches_homography():
    img = _texture(300, 320, 1)
    cfg = small_cfg(photometric=False)
    pair = kd.make_pair(img, np.random.default_rng(5), cfg, 64)
    assert pair is not None
    src = pair["src"].astype(np.float64)
    dst = pair["dst"].astype(np.float64)
    assert np.allclose(pair["H_src2dst"] @ pair["H_dst2src"], np.eye(3), atol=1e-8)
    warped = cv2.warpPerspective(src, pair["H_src2dst"], (64, 64))
    inside = cv2.warpPerspective(np.ones_like(src), pair["H_src2dst"], (64, 64)) > 0.999
    inside &= dst > 0
    assert inside.sum() > 500
    assert np.corrcoef(warped[inside], dst[inside])[0, 1] > 0.97


def test_rejections():
    cfg = small_cfg()
    flat = np.full((300, 300, 3), 128, np.uint8)
    assert kd.make_pair(flat, np.random.default_rng(0), cfg, 64) is None      # texture test
    tiny = _texture(60, 60, 0)
    assert kd.make_pair(tiny, np.random.default_rng(0), cfg, 64) is None      # window larger than image


def test_photometric_jitter_keeps_shape_and_type():
    img = _texture(50, 40, 2)
    out = augment.photometric_jitter(img, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8


def test_cache_manifest_and_regeneration(photo_dir, tmp_path):
    out = tmp_path / "ds"
    cfg = small_cfg()
    kd.prepare_dataset(photo_dir, out, cfg, progress=False)
    man = kd.read_manifest(out)
    assert man["params"]["max_scale"] == 2.0 and man["counts"]["train"] > 0
    stamp = os.stat(out / "train_src.npy").st_mtime_ns
    kd.prepare_dataset(photo_dir, out, cfg, progress=False)                  # reused
    assert os.stat(out / "train_src.npy").st_mtime_ns == stamp
    kd.prepare_dataset(photo_dir, out, small_cfg(max_scale=1.5), progress=False)   # regenerated
    assert kd.read_manifest(out)["params"]["max_scale"] == 1.5
    assert os.stat(out / "train_src.npy").st_mtime_ns != stamp

    ds = kd.PairDataset(out, "train")
    src, dst, h_s2d, h_d2s = ds[0]
    assert src.shape == (1, 64, 64) and src.dtype == torch.float32 and float(src.max()) <= 1.0
    assert torch.allclose(h_s2d @ h_d2s, torch.eye(3), atol=1e-4)
    vs = kd.PairDataset(out, "val")
    assert vs[0][0].shape == (1, 96, 96)


def test_generation_is_reproducible_and_worker_independent(photo_dir):
    files = kfiles.list_images(photo_dir)
    cfg = small_cfg()
    a = kd.generate_pairs(files, cfg, 4, 64, 0, workers=0, progress=False)
    b = kd.generate_pairs(files, cfg, 4, 64, 0, workers=2, progress=False)
    assert len(a["src"]) == 4
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_train_and_val_images_are_disjoint(imagenet_sample):
    files = kfiles.list_images(imagenet_sample)
    train, val = kd.split_images(files, kd.PairConfig())
    assert len(val) == 150 and len(train) + len(val) == len(files)
    assert not set(train) & set(val)


def test_several_image_folders(tmp_path):
    """A source of several folders (os.pathsep-joined or a list): their union, and one
    manifest root (the deepest common folder)."""
    for name, n in (("a", 2), ("b", 3)):
        (tmp_path / name / "sub").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / name / "sub" / f"{i}.png"), _texture(40, 40, i))
    spec = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    files = kfiles.list_images(spec)
    assert len(files) == 5 and files == kfiles.list_images([tmp_path / "a", tmp_path / "b"])
    assert kfiles.images_root(spec) == tmp_path.resolve()
    assert len(kfiles.list_images(tmp_path / "b")) == 3
    with pytest.raises(FileNotFoundError, match="nowhere"):
        kfiles.list_images(os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "nowhere")]))
