"""HardNet training pieces: the loss on hand-made batches, patch-pair generation (geometry
through a homography, caching), validation metric, one training step, train/resume, CLI."""
import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch

from hardnet import HardNet, load_hardnet
from hardnet.data import (PatchPairConfig, dedupe, load_split, pairs_from_photo, prepare_patch_pairs,
                          read_manifest, sample_homography)
from hardnet.loss import distance_matrix, hardnet_loss, same_point_mask
from hardnet.patches import extract_patches
from hardnet.training import HardNetConfig, TrainConfig, fpr_at_95, init_weights, train
from keynet.base.training import LoopConfig, make_optimizer
from keynet.base.geometry import warp_points


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny batches: one torch thread is faster (and much faster on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- loss

def _unit(*xy):
    return torch.tensor(xy, dtype=torch.float64)


def test_loss_hand_made_batch_with_and_without_anchor_swap():
    a = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([1.0, 0.0], [0.6, 0.8])
    def dist(sq):  # the official distance: sqrt(squared distance + 1e-6)
        return math.sqrt(sq + 1e-6)

    d00 = dist(0.0)
    d01 = dist(0.4 ** 2 + 0.8 ** 2)  # ||a0 - p1||
    d10 = dist(2.0)                  # ||a1 - p0||
    d11 = dist(0.6 ** 2 + 0.2 ** 2)  # positive of pair 1
    # no swap: pair 0 -> hardest negative d01, pair 1 -> d10
    want = (max(0, 1 + d00 - d01) + max(0, 1 + d11 - d10)) / 2
    assert hardnet_loss(a, p, anchor_swap=False).item() == pytest.approx(want, abs=1e-7)
    # swap: pair 1 also sees ||a0 - p1|| = d01 < d10
    want_swap = (max(0, 1 + d00 - d01) + max(0, 1 + d11 - d01)) / 2
    assert hardnet_loss(a, p, anchor_swap=True).item() == pytest.approx(want_swap, abs=1e-7)
    # an ignored entry is no negative: pair 0 has no negative left without swap
    ignore = torch.tensor([[False, True], [False, False]])
    want_ign = (0.0 + max(0, 1 + d11 - d10)) / 2
    assert hardnet_loss(a, p, anchor_swap=False, ignore=ignore).item() == pytest.approx(want_ign, abs=1e-7)
    # margin enters linearly while active
    assert hardnet_loss(a, p, margin=2.0, anchor_swap=False).item() == pytest.approx(
        (2 + d00 - d01 + 2 + d11 - d10) / 2, abs=1e-7)


def test_loss_ignores_duplicates_and_checks_shapes():
    a = _unit([1.0, 0.0], [1.0, 0.0], [0.0, 1.0])  # pair 0 and 1 are the same patch twice
    p = a.clone()
    # the duplicate (distance 0 < 0.008) is not a negative: the hardest is sqrt(2) away
    assert hardnet_loss(a, p).item() == pytest.approx(0.0, abs=1e-6)
    d = distance_matrix(a, p)
    assert d.shape == (3, 3) and torch.allclose(d.diagonal(), torch.full((3,), 1e-3, dtype=d.dtype))
    with pytest.raises(ValueError):
        hardnet_loss(a, p[:2])
    with pytest.raises(ValueError):
        hardnet_loss(a[:1], p[:1])


def test_same_point_mask():
    img = torch.tensor([0, 0, 0, 1])
    xy = torch.tensor([[10.0, 10.0], [12.0, 10.0], [40.0, 10.0], [10.0, 10.0]])
    sc = torch.tensor([1.0, 1.0, 1.0, 1.0])
    m = same_point_mask(img, xy, sc, 4.0)
    assert m.tolist() == [[False, True, False, False], [True, False, False, False],
                          [False, False, False, False], [False, False, False, False]]


def test_fpr95():
    pos = np.arange(1, 101, dtype=float) / 100  # 95% accepted at threshold 0.95
    neg = np.array([0.5, 0.96, 2.0, 0.95])
    assert fpr_at_95(pos, neg) == pytest.approx(0.5)
    assert math.isnan(fpr_at_95(np.array([]), neg))


# --------------------------------------------------------------------------- data

def _photo(h=240, w=300, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 3.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def test_pairs_follow_the_homography():
    """Noise-free pairs: keypoint B is keypoint A mapped by H (with its scale), and patch B
    equals patch A up to interpolation (no photometric change, no rotation)."""
    # zoom + shift only (upright patches are equal only without rotation / shear)
    cfg = PatchPairConfig(photometric=False, max_blur_sigma=0, max_noise_std=0, position_noise=0, scale_noise=0,
                          points_per_view=40, max_angle=0, max_shearing=0, max_perspective=0)
    bgr = _photo()
    res = pairs_from_photo(bgr, np.random.default_rng(1), cfg, _FixedDetector())
    assert len(res["a"]) > 5
    h = sample_homography(np.random.default_rng(1), bgr.shape[:2], cfg)  # the same first draw
    assert np.allclose(res["kpt_b"], warp_points(res["kpt_a"].astype(np.float64), h), atol=1e-3)
    a = res["a"].astype(float)
    b = res["b"].astype(float)
    same = np.abs(a - b).mean()
    shuffled = np.abs(a - np.roll(b, 1, axis=0)).mean()
    assert same < 0.25 * shuffled, (same, shuffled)


class _FixedDetector:
    """Deterministic keypoints on a grid (stands in for DoG in tests)."""

    def __call__(self, grey):
        ys, xs = np.mgrid[60:180:20, 60:240:20]
        return np.c_[xs.ravel(), ys.ravel(), np.full(xs.size, 0.7)].astype(np.float64)


def test_patch_of_homography_view_equals_patch_of_original():
    """extract_patches + warp_points: a patch of an image scaled by 1.5 and shifted, at the
    mapped keypoint with the transferred scale, equals the original patch."""
    img = cv2.GaussianBlur(np.random.default_rng(5).random((200, 200)).astype(np.float32), (0, 0), 2.5)
    h = np.array([[1.5, 0.0, 7.0], [0.0, 1.5, -4.0], [0.0, 0.0, 1.0]])
    warped = cv2.warpPerspective(img, h, (320, 320), flags=cv2.INTER_CUBIC)
    k = np.array([[80.0, 90.0, 0.5], [110.0, 100.0, 0.8]])
    kw = warp_points(k, h)
    assert np.allclose(kw[:, 2], k[:, 2] * 1.5, rtol=1e-5)
    p0 = extract_patches(torch.from_numpy(img), torch.from_numpy(k))
    p1 = extract_patches(torch.from_numpy(warped), torch.from_numpy(kw))
    assert float((p0 - p1).abs().mean() / p0.std()) < 0.05


def test_dedupe():
    k = np.array([[10, 10, 1.0], [11, 10, 1.1], [11, 10, 2.0], [30, 30, 1.0], [10.5, 10, 1.0]])
    assert dedupe(k).tolist() == [0, 2, 3]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("hn")
    photos = root / "photos"
    photos.mkdir()
    for i in range(5):
        cv2.imwrite(str(photos / f"p{i}.png"), _photo(seed=i))
    cfg = PatchPairConfig(val_images=2, views_per_image=2, points_per_view=48)
    out = prepare_patch_pairs(photos, root / "pairs", cfg, progress=False)
    return photos, out, cfg


def test_dataset_cache_and_split(tiny_dataset):
    photos, out, cfg = tiny_dataset
    man = read_manifest(out)
    assert man["train_images"] == 3 and man["val_images"] == 2
    tr, va = load_split(out, "train"), load_split(out, "val")
    assert tr["a"].dtype == np.uint8 and tr["a"].shape[1:] == (32, 32) and len(tr["a"]) == len(tr["kpt_b"]) > 50
    assert len(va["a"]) > 10
    stamp = (out / "train_a.npy").stat().st_mtime_ns
    prepare_patch_pairs(photos, out, cfg, progress=False)  # same parameters: reused
    assert (out / "train_a.npy").stat().st_mtime_ns == stamp


def test_one_training_step_lowers_the_loss(tiny_dataset):
    _, out, _ = tiny_dataset
    tr = load_split(out, "train")
    torch.manual_seed(0)
    model = HardNet(dropout=0.0)
    init_weights(model, 0.6)
    opt = make_optimizer(model.parameters(), LoopConfig(lr=1e-3, optimizer="adam"))
    a = torch.from_numpy(tr["a"][:64]).float()[:, None] / 255
    b = torch.from_numpy(tr["b"][:64]).float()[:, None] / 255
    model.train()
    loss = hardnet_loss(model(a), model(b))
    opt.zero_grad()
    loss.backward()
    opt.step()
    before = loss.item()
    with torch.no_grad():
        model.train()
        after = hardnet_loss(model(a), model(b)).item()
    assert after < before, (before, after)


def _run_cfg(tiny, out, **loop):
    photos, pairs, data = tiny
    base = dict(epochs=2, pairs_per_epoch=32, batch_size=16, progress=False, device="cpu")
    base.update(loop)
    return TrainConfig(image_dir=str(photos), dataset_dir=str(pairs), out_dir=str(out), data=data,
                       net=HardNetConfig(val_pairs=40, val_block=20),
                       loop=dataclasses.replace(TrainConfig().loop, **base))


def test_train_resume_and_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    s1 = train(_run_cfg(tiny_dataset, run, max_steps=2))  # stops after epoch 0 (2 steps of 16)
    hist = s1["history"]
    assert [h["epoch"] for h in hist] == [-1, 0]  # -1: the untrained model
    model, meta = load_hardnet(run / "last.pt")
    assert meta["epoch"] == 1 and meta["train_config"]["loop"]["batch_size"] == 16
    assert (run / "history.csv").is_file() and (run / "best.pt").is_file()
    s2 = train(dataclasses.replace(_run_cfg(tiny_dataset, run), resume="auto"))
    assert [h["epoch"] for h in s2["history"]] == [-1, 0, 1]
    assert all(math.isfinite(h["val_fpr95"]) and math.isfinite(h["val_fpr95_same_photo"]) for h in s2["history"])
    # resumed = uninterrupted, bit for bit
    full = train(_run_cfg(tiny_dataset, tmp_path / "full"))
    for k, v in full["parameters"].items():
        assert torch.equal(v, s2["parameters"][k]), k
    # exported weights: no optimiser state, metadata kept, loads strictly
    from hardnet.training import export_weights
    from hardnet.weights import load_hardnet_checkpoint

    export_weights(run / "last.pt", tmp_path / "ship.pt", command="test")
    m, meta, extra = load_hardnet_checkpoint(tmp_path / "ship.pt")
    assert extra == {} and meta["epoch"] == 2 and meta["command"] == "test"
    assert (tmp_path / "ship.pt").stat().st_size < (run / "last.pt").stat().st_size / 2


def test_cli_paper_defaults():
    from keynet.commands import train_hardnet

    cfg, _ = train_hardnet.parse_config(["--image-dir", "x", "--batch-size", "64"])
    assert cfg.loop.optimizer == "adam" and cfg.loop.batch_size == 64 and cfg.data.seed == 0
    assert cfg.data.photometric is True
    # --paper-defaults fills in everything not given explicitly
    cfg, _ = train_hardnet.parse_config(["--image-dir", "x", "--paper-defaults", "--batch-size", "64",
                                         "--photometric", "false"])
    assert cfg.data.photometric is False and cfg.loop.batch_size == 64
    assert (cfg.loop.optimizer, cfg.loop.lr, cfg.loop.momentum, cfg.loop.weight_decay, cfg.loop.schedule) == (
        "sgd", 10.0, 0.9, 1e-4, "linear")
    assert train_hardnet.parse_config(["--image-dir", "x", "--paper-defaults"])[0].loop.batch_size == 1024


def test_benchmark_sift_at_same_keypoints():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "hardnet_vs_sift.py"
    spec = importlib.util.spec_from_file_location("hardnet_vs_sift", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)
    k = np.array([[50.0, 60.0, 0.7], [150.0, 100.0, 1.4], [200.0, 180.0, 2.0], [50.0, 60.0, 2.0]])
    d = mod.sift_at(img, k, 10.0)
    assert d.shape == (4, 128) and d.dtype == np.float32
    assert not np.allclose(d[0], d[3])  # same place, other scale: another descriptor
    assert mod.sift_at(img, np.zeros((0, 4)), 10.0).shape == (0, 128)


def test_oriented_pairs_undo_the_rotation():
    """With ``orientation='gradient'`` each view's patch is cut at that view's own dominant
    gradient orientation: under a large pure rotation the two patches agree far better than
    the upright ones; and ``angle`` records the rotation of the homography."""
    common = dict(photometric=False, max_blur_sigma=0, max_noise_std=0, position_noise=0, scale_noise=0,
                  points_per_view=40, max_angle=180, max_shearing=0, max_perspective=0, min_zoom=1.0,
                  max_zoom=1.0, max_shift=0.0)
    bgr = _photo()
    rng = 7
    up = pairs_from_photo(bgr, np.random.default_rng(rng), PatchPairConfig(**common), _FixedDetector())
    cfg = PatchPairConfig(orientation="gradient", **common)
    det = _FixedDetector()
    from hardnet.data import _Detector
    det.orientation = _Detector(cfg, lambda g: np.zeros((0, 3))).orientation
    ori = pairs_from_photo(bgr, np.random.default_rng(rng), cfg, det)
    h = sample_homography(np.random.default_rng(rng), bgr.shape[:2], cfg)
    turn = math.degrees(math.atan2(h[1, 0], h[0, 0]))
    assert abs(turn) > 60 and np.allclose(up["angle"], turn, atol=1e-3)
    def gap(res):
        a, b = res["a"].astype(float), res["b"].astype(float)
        return np.median(np.abs(a - b).mean((1, 2)))
    assert len(ori["a"]) == len(up["a"]) > 5
    assert gap(ori) < 0.5 * gap(up), (gap(ori), gap(up))
    with pytest.raises(ValueError, match="orientation_weights"):
        PatchPairConfig(orientation="learned")


def test_missing_init_weights_is_one_line_and_leaves_no_run_folder(tmp_path):
    from keynet.commands.train_hardnet import main

    rc = main(["--image-dir", str(tmp_path), "--init-weights", str(tmp_path / "missing.pt"),
               "--out-dir", str(tmp_path / "run"), "--dataset-dir", str(tmp_path / "ds")])
    assert rc == 2 and not (tmp_path / "run").exists() and not (tmp_path / "ds").exists()
