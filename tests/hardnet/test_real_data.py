"""The real-correspondence data of the descriptor: the stronger photometric simulation, webcam
patch pairs, SfM-track patch pairs, joining pair sets (negatives), and the real-pair
validation metric."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hardnet import appearance
from hardnet.appearance import AppearanceConfig, simulate_appearance
from hardnet.data import PatchPairConfig, _Detector
from hardnet.loss import hardnet_loss, same_point_mask
from hardnet.patch_task import join_pair_sets
from hardnet.patches import extract_patches
from hardnet.real_validation import (matlab_to_zero_based, multimodal_eval_pairs, mutual_nn, score_pair,
                                     summarise, webcam_eval_pairs)
from hardnet.sfm_pairs import pairs_from_tracks
from hardnet.webcam_pairs import WebcamError, prepare_webcam_pairs, webcam_pairs
from synthetic_scene import texture

OFF = {f"p_{e}": 0.0 for e in appearance.EFFECTS}


def _photo(seed=0, h=240, w=320):
    t = texture(np.random.default_rng(seed), 512)[:h, :w]
    return np.repeat(t[..., None], 3, 2).astype(np.uint8)


# ----------------------------------------------------------------------------- appearance
def test_appearance_off_is_identity_and_each_effect_stays_in_range():
    img = _photo()
    rng = np.random.default_rng(0)
    assert np.array_equal(simulate_appearance(img, rng, AppearanceConfig(**OFF)), img)
    x = img.astype(np.float32)
    for seed in range(5):
        r = np.random.default_rng(seed)
        night = appearance.night(x, r)
        # gain <= 0.5 and gamma >= 1.5 on v in [0, 1]: at most half the light, plus noise
        assert night.mean() < 0.5 * x.mean()
        cast = appearance.colour_cast(x, np.random.default_rng(seed))
        ratio = cast.reshape(-1, 3).mean(0) / x.reshape(-1, 3).mean(0)
        assert np.all((ratio >= 0.6 - 1e-6) & (ratio <= 1.4 + 1e-6))
        sh = appearance.shadow(x, np.random.default_rng(seed)) / np.maximum(x, 1)
        assert sh.min() >= 0.3 - 1e-3 and sh.max() <= 1.0 + 1e-6 and sh.min() < 0.99  # darkens, never lightens
        loc = appearance.local_illumination(x, np.random.default_rng(seed)) / np.maximum(x, 1)
        assert loc.min() >= 0.3 - 1e-3 and loc.max() <= 1.8 + 1e-3
    for name in appearance.EFFECTS:  # each alone changes the photo, keeps size and type
        out = simulate_appearance(img, np.random.default_rng(1), AppearanceConfig(**{**OFF, f"p_{name}": 1.0}))
        assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img), name
    with pytest.raises(ValueError, match="p_night"):
        AppearanceConfig(p_night=1.5)


def _window_ncc(a, b, win=32):
    """NCC of two grey images in non-overlapping win x win windows."""
    h, w = a.shape
    pa = a[: h // win * win, : w // win * win].reshape(h // win, win, w // win, win).transpose(0, 2, 1, 3)
    pb = b[: h // win * win, : w // win * win].reshape(h // win, win, w // win, win).transpose(0, 2, 1, 3)
    return _ncc(pa.reshape(-1, win * win), pb.reshape(-1, win * win))


def test_thermal_field_keeps_inverts_and_washes_out_the_local_pattern():
    """The thermal-like effect: a grey image whose windows keep their pattern in some places
    and have it inverted in others (the mix measured on real visible / thermal pairs), the
    grey levels in range; off, it draws nothing (the strong preset's pairs are unchanged)."""
    img = _photo(3, 256, 384)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ncc = []
    for seed in range(6):
        out = simulate_appearance(img, np.random.default_rng(seed), AppearanceConfig(**{**OFF, "p_thermal": 1.0}))
        assert out.dtype == np.uint8 and np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        ncc.append(_window_ncc(grey, out[..., 0].astype(np.float32)))
    ncc = np.concatenate(ncc)
    assert np.mean(ncc > 0.3) > 0.15 and np.mean(ncc < -0.3) > 0.15, (np.mean(ncc > 0.3), np.mean(ncc < -0.3))
    assert np.abs(ncc).max() <= 1.0 + 1e-6
    # off: one draw per other effect and none for thermal
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    simulate_appearance(img, r1, AppearanceConfig(**OFF))
    r2.random(len(appearance.EFFECTS) - 1)
    assert r1.random() == r2.random()
    assert appearance.THERMAL.p_thermal > 0 and AppearanceConfig().p_thermal == 0
    assert PatchPairConfig(appearance="thermal").appearance == "thermal"


def test_strong_appearance_changes_only_the_photometry_of_pairs():
    """With appearance='strong' the pairs still correspond: same keypoints as 'jitter'."""
    cfg = PatchPairConfig(points_per_view=20, views_per_image=1, position_noise=0, scale_noise=0)
    with pytest.raises(ValueError, match="appearance"):
        PatchPairConfig(appearance="bright")
    strong = PatchPairConfig(**{**cfg.__dict__, "appearance": "strong"})
    assert strong.appearance == "strong"


# ----------------------------------------------------------------------------- webcams
def _webcam(folder, seed, n=3, gammas=(1.0, 0.6, 1.8)):
    """A fixed 'camera': the same scene under a different tone curve in each frame."""
    folder.mkdir(parents=True)
    base = _photo(seed).astype(np.float32) / 255.0
    for k in range(n):
        frame = np.clip(255.0 * base ** gammas[k % len(gammas)], 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"2013010{k}_120000.png"), frame)
    return folder


def _ncc(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-9)
    b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-9)
    return (a * b).mean(1)


def test_webcam_pairs_are_the_same_scene_point_across_frames(tmp_path):
    cam = _webcam(tmp_path / "cam", 3)
    cfg = PatchPairConfig(points_per_view=30, views_per_image=2, position_noise=0, scale_noise=0, photometric=False,
                          max_noise_std=0, max_blur_sigma=0, min_patch_std=2.0)
    res = webcam_pairs(cam, cfg, webcam_id=7, split_id=0, detector=_Detector(cfg))
    assert len(res["a"]) > 50 and np.all(res["image"] == 7)
    ncc = _ncc(res["a"], res["b"])
    shuffled = _ncc(res["a"], np.roll(res["b"], 1, axis=0))
    # the same point under another tone curve and a warp (upright patches, rotated up to 25 deg)
    # correlates; another point does not
    assert np.median(ncc) > 0.45 and np.median(shuffled) < 0.15
    still = PatchPairConfig(**{**cfg.__dict__, "max_angle": 0.0, "min_zoom": 1.0, "max_zoom": 1.0,
                               "max_shearing": 0.0, "max_perspective": 0.0, "max_shift": 0.0})
    res0 = webcam_pairs(cam, still, webcam_id=7, split_id=0, detector=_Detector(still))
    assert np.allclose(res0["kpt_a"], res0["kpt_b"], atol=1e-4)  # no warp: the same pixel in both frames
    assert np.median(_ncc(res0["a"], res0["b"])) > 0.9  # only the tone curve differs
    # view A is the camera's own pixel frame: its patch is the patch of some frame at kpt_a
    frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) for p in sorted(cam.iterdir())]
    k = torch.from_numpy(res["kpt_a"][:5])
    cut = [np.round(extract_patches(torch.from_numpy(f), k)[:, 0].numpy()) for f in frames]
    assert any(np.abs(c - res["a"][:5]).max() <= 1 for c in cut)


def test_webcam_pair_set_splits_by_camera_and_caches(tmp_path):
    cams = [_webcam(tmp_path / n, s) for n, s in (("a", 1), ("b", 2), ("c", 3))]
    cfg = PatchPairConfig(points_per_view=10, views_per_image=1)
    counts = prepare_webcam_pairs(cams[:2], cams[2:], tmp_path / "out", cfg, progress=False)
    tr = np.load(tmp_path / "out" / "train_image.npy")
    va = np.load(tmp_path / "out" / "val_image.npy")
    assert counts == {"train": len(tr), "val": len(va)} and len(tr) and len(va)
    assert set(tr) <= {0, 1} and set(va) == {2}  # whole webcams apart, ids disjoint
    mtime = (tmp_path / "out" / "manifest.json").stat().st_mtime_ns
    assert prepare_webcam_pairs(cams[:2], cams[2:], tmp_path / "out", cfg, progress=False) == counts
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns == mtime  # reused, not remade
    with pytest.raises(WebcamError, match="not found"):
        prepare_webcam_pairs([tmp_path / "nope"], [], tmp_path / "o2", cfg, progress=False)
    (tmp_path / "one").mkdir()
    cv2.imwrite(str(tmp_path / "one" / "x.png"), _photo())
    with pytest.raises(WebcamError, match="at least 2"):
        webcam_pairs(tmp_path / "one", cfg, 0, 0, _Detector(cfg))


# ----------------------------------------------------------------------------- negatives
def test_joined_sets_keep_their_ids_apart_and_webcam_frames_are_not_negatives(tmp_path):
    def pair_set(folder, ids, val_ids):
        folder.mkdir()
        for split, im in (("train", ids), ("val", val_ids)):
            n = len(im)
            arrays = {"a": np.zeros((n, 32, 32), np.uint8), "b": np.zeros((n, 32, 32), np.uint8),
                      "image": np.asarray(im, np.int32), "kpt_a": np.ones((n, 3), np.float32),
                      "kpt_b": np.ones((n, 3), np.float32), "angle": np.zeros(n, np.float32)}
            for k, v in arrays.items():
                np.save(folder / f"{split}_{k}.npy", v)
        (folder / "manifest.json").write_text("{}")
        return str(folder)

    photos = {"a": np.zeros((3, 32, 32), np.uint8), "b": np.zeros((3, 32, 32), np.uint8),
              "image": np.array([0, 1, 2], np.int32), "kpt_a": np.ones((3, 3), np.float32),
              "kpt_b": np.ones((3, 3), np.float32), "angle": np.zeros(3, np.float32)}
    joined, vals, counts = join_pair_sets(photos, [pair_set(tmp_path / "webcam", [0, 0, 1], [2]),
                                                   pair_set(tmp_path / "sfm", [1_000_000, 1_000_005], [])])
    assert joined["image"].tolist() == [0, 1, 2, 3, 3, 4, 6, 11]
    assert vals["webcam"]["image"].tolist() == [5] and counts["sfm"] == {"train": 2, "val": 0}
    twice, _, _ = join_pair_sets(photos, [str(tmp_path / "webcam")], repeat=2)
    assert twice["image"].tolist() == [0, 1, 2, 3, 3, 4, 3, 3, 4]  # oversampled, the same ids
    with pytest.raises(ValueError, match="extra_repeat"):
        join_pair_sets(photos, [str(tmp_path / "webcam")], repeat=0)
    with pytest.raises(FileNotFoundError, match="hardnet-data"):
        join_pair_sets(photos, [str(tmp_path / "missing")])

    # two frames of one webcam at the same pixel are the same point: masked, not a negative
    image = torch.tensor([3, 3, 4])
    xy = torch.tensor([[10.0, 10.0], [10.5, 10.0], [10.0, 10.0]])
    mask = same_point_mask(image, xy, torch.ones(3), 4.0)
    assert mask[0, 1] and mask[1, 0] and not mask[0, 2] and not mask[2, 0]
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]), dim=1)
    # without the mask pair 0's hardest negative is pair 1's positive (the same point): a high loss
    assert hardnet_loss(a, a, ignore=mask) < hardnet_loss(a, a) - 0.5


# ----------------------------------------------------------------------------- SfM tracks
def test_sfm_pairs_cut_each_observation_at_its_own_keypoint():
    img_a = texture(np.random.default_rng(5), 256)
    h = np.array([[0.9, 0.1, 12.0], [-0.05, 1.05, 4.0], [0.0, 0.0, 1.0]])
    img_b = cv2.warpPerspective(img_a, h, (256, 256))
    xy = np.array([[100.0, 110.0], [130.0, 90.0], [120.0, 140.0]])
    xy_b = (np.c_[xy, np.ones(3)] @ h.T)[:, :2]
    s_b = np.sqrt(abs(np.linalg.det(h[:2, :2])))
    tracks = [[("b.png", *xy_b[i], 1.0 * s_b), ("a.png", *xy[i], 1.0)] for i in range(3)]
    tracks.append([("a.png", 5.0, 5.0, 1.0), ("b.png", 128.0, 128.0, 1.0)])  # leaves image a: dropped
    tracks.append([("a.png", 128.0, 128.0, 1.0)])  # one observation: no pair
    res = pairs_from_tracks(tracks, {"a.png": img_a, "b.png": img_b}, pairs_per_point=3, image_offset=100)
    assert len(res["a"]) == 3
    assert np.allclose(res["kpt_a"][:, :2], xy, atol=1e-4) and np.allclose(res["kpt_b"][:, :2], xy_b, atol=1e-4)
    assert np.all(res["image"] == 100)  # the anchor is the first image by name: a.png
    want = np.round(extract_patches(torch.from_numpy(img_b), torch.from_numpy(res["kpt_b"]))[:, 0].numpy())
    assert np.abs(want - res["b"]).max() <= 1
    assert np.median(_ncc(res["a"], res["b"])) > 0.8 and np.all(np.isnan(res["angle"]))


# ----------------------------------------------------------------------------- validation metric
def test_score_pair_against_a_hand_computed_case():
    ka = np.array([[10.0, 10.0, 1], [50.0, 50.0, 1], [90.0, 20.0, 1], [200.0, 5.0, 1]])
    h = np.array([[1.0, 0, 5.0], [0, 1.0, 0.0], [0, 0, 1.0]])  # B = A shifted by 5 px in x
    kb = np.array([[15.0, 10.0, 1], [55.0, 52.0, 1], [95.0, 30.0, 1], [40.0, 40.0, 1]])
    da = np.eye(4, dtype=np.float32)
    db = np.eye(4, dtype=np.float32)
    db[3] = [0, 0, 0.1, 0.9]  # still closest to a3
    s = score_pair(ka, kb, da, db, h, 3.0, (100, 220), (100, 110))
    # 4 mutual matches: errors 0, 2, 10, |(205,5)-(40,40)| -> 2 correct at 3 px
    # A points inside B (110 wide): 3 (205 leaves); B points inside A: 4 -> ms = 2 / 3
    assert s == {"matches": 4, "correct": 2, "mma": 0.5, "ms": pytest.approx(2 / 3)}
    assert mutual_nn(np.zeros((0, 4)), db).shape == (0, 2)
    # a1's nearest is b0, but b0's nearest is a0: only the mutual pair (0, 0) is a match
    assert mutual_nn(np.array([[1.0, 0.0], [0.9, 0.1]]), np.array([[1.0, 0.0]])).tolist() == [[0, 0]]
    rows = [{"group": "webcam", "mma": 0.5, "ms": 0.2}, {"group": "webcam", "mma": 1.0, "ms": 0.4},
            {"group": "vis_ir", "mma": 0.2, "ms": 0.1}, {"group": "rgb_nir", "mma": 0.4, "ms": 0.3}]
    out = summarise(rows)
    assert out["webcam_mma"] == 0.75 and out["multimodal_pool_mma"] == pytest.approx(0.3)
    assert out["score"] == pytest.approx((0.75 + 0.3) / 2)


def test_matlab_homography_to_zero_based():
    h1 = np.array([[1.2, 0.1, 3.0], [0.05, 0.9, -2.0], [1e-4, 0.0, 1.0]])
    h0 = matlab_to_zero_based(h1)
    p0 = np.array([40.0, 70.0])
    q1 = h1 @ np.r_[p0 + 1, 1]
    q0 = h0 @ np.r_[p0, 1]
    assert np.allclose(q0[:2] / q0[2], q1[:2] / q1[2] - 1)


def test_real_validation_sources(tmp_path, shared_dir):
    mm = shared_dir / "data" / "multimodal"
    pairs = multimodal_eval_pairs(mm)
    assert len(pairs) == 18 and {p.group for p in pairs} == {"vis_ir", "rgb_nir"}
    # the landmarks of the moving image (1-based) land on the fixed ones through h_ab^-1
    gt = json.loads((mm / "RGB_NIR" / "gt_rgb_nir.json").read_text())["pairs"]
    rec = gt[sorted(gt, key=lambda k: (len(k), k))[0]]
    p = [q for q in pairs if q.group == "rgb_nir"][0]
    lm_b = np.asarray(rec["landmarks_moving"]) - 1
    lm_a = np.asarray(rec["landmarks_fixed"]) - 1
    proj = np.c_[lm_b, np.ones(len(lm_b))] @ np.linalg.inv(np.asarray(p.h_ab)).T
    assert np.median(np.linalg.norm(proj[:, :2] / proj[:, 2:] - lm_a, axis=1)) < 3.0
    web = webcam_eval_pairs(shared_dir / "data" / "webcam", ["mexico"], per_webcam=5)
    assert len(web) == 5 and len({p.name for p in web}) == 5 and all(p.image_a != p.image_b for p in web)
    assert web == webcam_eval_pairs(shared_dir / "data" / "webcam", ["mexico"], per_webcam=5)  # seeded


def test_hardnet_data_bad_inputs_one_line_exit_2(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "keynet.cli", "hardnet-data", "--out-dir", str(tmp_path / "o"),
                               *args], capture_output=True, text=True)
    r = run("--webcam-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nowhere" in r.stderr
    r = run()
    assert r.returncode == 2 and "nothing to make" in r.stderr
    r = run("--multimodal-dir", str(tmp_path))
    assert r.returncode == 2 and "gt_vis_ir.json" in r.stderr and r.stderr.strip().count("\n") == 0
