"""Training loop: schedule, data order, exact resume, NaN stop, validation, DDP (2 gloo processes)."""
from __future__ import annotations

import dataclasses
import os
import socket

import cv2
import numpy as np
import pytest
import torch

from keynet import data as kd
from keynet import training as kt
from keynet.model import KeyNet, KeyNetConfig
from keynet.base.training import TrainingDiverged


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    photos = root / "photos"
    photos.mkdir()
    for i in range(6):
        rng = np.random.default_rng(i)
        small = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
        cv2.imwrite(str(photos / f"p{i}.png"), cv2.resize(small, (240, 240), interpolation=cv2.INTER_CUBIC))
    cfg = kd.PairConfig(patch_size=64, val_patch_size=64, num_train=8, num_val=2, val_images=2,
                        pairs_per_image=3, seed=1)
    kd.prepare_dataset(photos, root / "ds", cfg, progress=False)
    return photos, root / "ds", cfg


def _cfg(tiny, out, resume=None, **loop):
    photos, ds, pc = tiny
    base = dict(batch_size=4, pairs_per_epoch=4, epochs=2, val_every=1, workers=0, progress=False, device="cpu",
                seed=pc.seed)
    base.update(loop)
    return kt.TrainConfig(data_dir=str(photos), dataset_dir=str(ds), out_dir=str(out), gen_workers=0, data=pc,
                          model=KeyNetConfig(num_filters=4), resume=resume,
                          loop=dataclasses.replace(kt.TrainConfig().loop, **base))


def test_official_defaults_are_pinned():
    """The official train_network.py / check_val_rep values (no ../shared needed)."""
    c = kt.TrainConfig()
    assert (c.loop.epochs, c.loop.batch_size, c.loop.lr, c.loop.lr_decay, c.loop.decay_epochs) == (25, 32, 1e-3, 0.7, 10)
    assert (c.loop.schedule, c.loop.val_every, c.loop.patience, c.loop.weight_decay) == ("staircase", 3, 3, 0.0)
    assert (c.val.nms_size, c.val.num_points, c.val.overlap, c.val.relu) == (15, 25, 0.6, False)
    assert (kt.VAL_BORDER, kt.VAL_MASK_THRESHOLD) == (15, 0.75)
    assert (c.data.max_angle, c.data.max_scale, c.data.max_shearing, c.data.patch_size) == (45.0, 2.0, 0.8, 192)
    assert (c.data.num_train, c.data.num_val, c.data.tries) == (4001, 1501, 11)
    assert (c.loss.sizes, c.loss.factors, c.loss.border) == ((8, 16, 24, 32, 40), (256.0, 64.0, 16.0, 4.0, 1.0), 16)


class _Pairs:
    """A validation set of given (src, dst, H_src2dst, H_dst2src), for :func:`validate`."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _peaks(size, pts):
    m = torch.zeros(1, size, size)
    for k, (x, y) in enumerate(pts):
        m[0, y, x] = 1.0 - 0.01 * k
    return m


_PTS = [(x, y) for y in (20, 75, 130) for x in (20, 75, 130)]  # 55 px apart


def test_validation_metric_known_answers():
    """The 'network' is the identity, so the score maps are the inputs. Identical maps:
    100%; a 27 px shift with the matching homography: 100%, without it: 0% (single scale,
    radius 30: circles 27 px apart have IoU 0.29 < 0.6); 4 of the 9 points moved, one of
    them into the border: 5 of min(9, 8)."""
    size, eye, cpu = 160, torch.eye(3), torch.device("cpu")
    same = _Pairs([(_peaks(size, _PTS), _peaks(size, _PTS), eye, eye)])
    r = kt.validate(_Identity(), same, cpu, nms_size=1, num_points=9)
    assert r["rep_single_scale"] == pytest.approx(100.0) and r["num_pairs"] == 1
    # destination = source shifted by +27 px in x: H_dst2src maps x_dst -> x_dst - 27
    d2s = torch.tensor([[1.0, 0, -27], [0, 1, 0], [0, 0, 1]])
    dst = _peaks(size, [(x + 27, y) for x, y in _PTS])
    assert kt.validate(_Identity(), _Pairs([(_peaks(size, _PTS), dst, torch.linalg.inv(d2s), d2s)]), cpu,
                       nms_size=1, num_points=9)["rep_single_scale"] == pytest.approx(100.0)
    assert kt.validate(_Identity(), _Pairs([(_peaks(size, _PTS), dst, eye, eye)]), cpu, nms_size=1,
                       num_points=9)["rep_single_scale"] == pytest.approx(0.0)
    part = [(x, y) if k % 2 == 0 else (x, y + 27) for k, (x, y) in enumerate(_PTS)]
    r = kt.validate(_Identity(), _Pairs([(_peaks(size, _PTS), _peaks(size, part), eye, eye)]), cpu, nms_size=1,
                    num_points=9)
    # (75, 130) moved to y = 157 falls in the 15 px border: 8 destination points, 5 repeated
    assert r["rep_single_scale"] == pytest.approx(100.0 * 5 / 8)


def test_validation_overlap_and_border_constants_are_used():
    """A 1 px shift at scale 1 repeats at IoU 0.1 but not at 0.99; a point inside the 15 px
    border is never counted."""
    size, eye, cpu = 96, torch.eye(3), torch.device("cpu")
    pts = [(30, 30), (60, 40), (45, 70)]
    shifted = _Pairs([(_peaks(size, pts), _peaks(size, [(x + 1, y) for x, y in pts]), eye, eye)])
    strict = kt.validate(_Identity(), shifted, cpu, nms_size=1, num_points=3, overlap=0.99)
    loose = kt.validate(_Identity(), shifted, cpu, nms_size=1, num_points=3, overlap=0.1)
    assert strict["rep_single_scale"] == pytest.approx(0.0) and loose["rep_single_scale"] == pytest.approx(100.0)
    inner = [(30, 30), (60, 40)]
    edge = inner + [(kt.VAL_BORDER - 2, 50)]
    r = kt.validate(_Identity(), _Pairs([(_peaks(size, edge), _peaks(size, inner), eye, eye)]), cpu, nms_size=1,
                    num_points=3)
    assert r["rep_single_scale"] == pytest.approx(100.0)  # the border point is masked out of both


@pytest.mark.slow
def test_train_resume_is_exact(tiny_dataset, tmp_path):
    full = kt.train(_cfg(tiny_dataset, tmp_path / "full"))
    assert (tmp_path / "full" / "best.pt").is_file() and (tmp_path / "full" / "curves.png").is_file()
    assert "epoch 1" in (tmp_path / "full" / "train.log").read_text()
    lines = (tmp_path / "full" / "history.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,")

    kt.train(_cfg(tiny_dataset, tmp_path / "half", epochs=1))
    resumed = kt.train(_cfg(tiny_dataset, tmp_path / "half", epochs=2, resume=str(tmp_path / "half" / "last.pt")))
    assert resumed["global_step"] == full["global_step"] == 2
    for k, v in full["parameters"].items():
        assert torch.equal(v, resumed["parameters"][k]), k

    from keynet.weights import load_checkpoint
    model, meta, extra = load_checkpoint(tmp_path / "full" / "best.pt")
    assert meta["seed"] == 1 and meta["train_config"]["model"]["num_filters"] == 4 and extra == {}
    assert (tmp_path / "full" / "best.pt").stat().st_size < 100_000


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    kt.train(_cfg(tiny_dataset, tmp_path, epochs=1))
    before = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(kt, "msip_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        kt.train(_cfg(tiny_dataset, tmp_path, epochs=2, resume=str(tmp_path / "last.pt")))
    assert (tmp_path / "last.pt").read_bytes() == before


def test_validation_of_reference_weights_is_sensible(tiny_dataset, reference_dir):
    from keynet.weights import load_keynet
    model, _ = load_keynet(reference_dir / "keynet_tf_official.npz")
    ds = kd.PairDataset(tiny_dataset[1], "val")
    rep = kt.validate(model, ds, torch.device("cpu"), num_points=10)
    assert rep["num_pairs"] == len(ds) and 0.0 <= rep["rep_single_scale"] <= 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    summary = kt.train(cfg)
    torch.save(summary["parameters"], os.path.join(out, f"params{rank}.pt"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_one_step(tiny_dataset, tmp_path):
    import torch.multiprocessing as mp
    cfg = _cfg(tiny_dataset, tmp_path / "run", epochs=1, max_steps=1, val_last=False, val_every=5)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "params0.pt")
    p1 = torch.load(tmp_path / "params1.pt")
    init = KeyNet(cfg.model)
    kt.init_tf_(init, cfg.loop.seed)
    changed = False
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k  # gradients were averaged: replicas agree
        changed |= not torch.equal(p0[k], dict(init.named_parameters())[k].detach())
    assert changed
    assert (tmp_path / "run" / "last.pt").is_file()


def test_train_cli_options_generated_from_the_configs(tmp_path):
    """train.py: the official flag names, --seed apart from --data-seed, --model-preset sets
    the architecture unless a flag says otherwise, several --data-dir folders."""
    from keynet.commands import train as cli

    cfg = cli.parse_config(["--data-dir", "a", "b", "--num-epochs", "7", "--epochs-val", "2", "--seed", "3",
                            "--init-initial-learning-rate", "0.01", "--num-learnable-blocks", "2",
                            "--msip-sizes", "8,16", "--msip-factors", "4,1", "--weight-coordinates", "false",
                            "--max-angle", "60", "--resume"])
    assert cfg.data_dir == os.pathsep.join(["a", "b"]) and cfg.resume == "auto"
    assert (cfg.loop.epochs, cfg.loop.val_every, cfg.loop.seed, cfg.loop.lr) == (7, 2, 3, 0.01)
    assert cfg.data.seed == 12345 and cfg.data.max_angle == 60.0
    assert cfg.model.num_blocks == 2 and cfg.loss.sizes == (8, 16) and cfg.loss.factors == (4.0, 1.0)
    assert cfg.loss.coordinate_weighting is False
    tiny = cli.parse_config(["--data-dir", "a", "--model-preset", "tiny"])
    assert (tiny.model.num_blocks, tiny.model.num_filters, tiny.model.num_levels) == (1, 1, 1)
    assert cli.parse_config(["--data-dir", "a", "--model-preset", "tiny", "--num-filters", "2"]).model.num_filters == 2
    assert cli.main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()  # a user error leaves no empty run folder


def test_benchmark_protocol_validation(reference_dir):
    """validate_benchmark = the multi-scale detector + the HSequences pair evaluation on the
    validation pairs: identical views 100%; a view shifted by 24 px with its homography ~100%,
    and far lower with the identity in its place."""
    from keynet.weights import load_keynet
    from keynet.base.resources import TEST_IMAGE_LIST as IMAGE_LIST

    model, _ = load_keynet(reference_dir / "keynet_tf_official.npz")
    cam = cv2.imread(str(IMAGE_LIST.parent / "test_im.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    src = torch.from_numpy(cam[100:260, 150:310] / 255.0)[None]
    dst = torch.from_numpy(cam[100:260, 174:334] / 255.0)[None]  # content moved 24 px left
    eye = torch.eye(3)
    s2d = torch.tensor([[1.0, 0, -24], [0, 1, 0], [0, 0, 1]])
    cpu = torch.device("cpu")
    same = kt.validate_benchmark(model, _Pairs([(src, src.clone(), eye, eye)]), cpu, top_k=40)
    assert same["bench_rep"] == pytest.approx(100.0) and same["num_pairs"] == 1
    moved = kt.validate_benchmark(model, _Pairs([(src, dst, s2d, torch.linalg.inv(s2d))]), cpu, top_k=40)
    wrong = kt.validate_benchmark(model, _Pairs([(src, dst, eye, eye)]), cpu, top_k=40)
    assert moved["bench_rep"] > 80.0 and wrong["bench_rep"] < moved["bench_rep"] - 30.0
    task = kt.KeyNetTask(dataclasses.replace(kt.TrainConfig(), val=kt.ValConfig(protocol="benchmark")))
    assert task.metric == "bench_rep" and kt.KeyNetTask(kt.TrainConfig()).metric == "rep_single_scale"
