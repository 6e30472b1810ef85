"""Training loop: schedule, data order, exact resume, NaN stop, validation, DDP (2 gloo processes)."""
from __future__ import annotations

import os
import socket

import cv2
import numpy as np
import pytest
import torch

from keynet import data as kd
from keynet import training as kt


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


def _cfg(tiny, out, **kw):
    photos, ds, pc = tiny
    base = dict(data_dir=str(photos), dataset_dir=str(ds), out_dir=str(out), patch_size=pc.patch_size,
                val_patch_size=pc.val_patch_size, num_train=pc.num_train, num_val=pc.num_val,
                val_images=pc.val_images, pairs_per_image=pc.pairs_per_image, seed=pc.seed, data_seed=pc.seed,
                gen_workers=0,
                batch_size=4, pairs_per_epoch=4, epochs=2, val_every=1, workers=0, progress=False,
                num_filters=4, device="cpu")
    base.update(kw)
    return kt.TrainConfig(**base)


def test_staircase_schedule():
    cfg = kt.TrainConfig(lr=1e-3, lr_decay=0.7, decay_epochs=10)
    spe = 4001 / 32
    decay_steps = int(10 * spe)
    assert kt.lr_at(0, cfg, spe) == pytest.approx(1e-3)
    assert kt.lr_at(decay_steps - 1, cfg, spe) == pytest.approx(1e-3)
    assert kt.lr_at(decay_steps, cfg, spe) == pytest.approx(7e-4)
    assert kt.lr_at(2 * decay_steps, cfg, spe) == pytest.approx(4.9e-4)


def test_epoch_indices_walk_all_pairs():
    a = np.concatenate([kt.epoch_indices(10, e, 4, seed=0) for e in range(5)])
    assert len(a) == 20
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))
    assert np.array_equal(kt.epoch_indices(10, 3, 4, 0), kt.epoch_indices(10, 3, 4, 0))


def test_train_resume_is_exact(tiny_dataset, tmp_path):
    full = kt.train(_cfg(tiny_dataset, tmp_path / "full"))
    assert (tmp_path / "full" / "best.pt").is_file() and (tmp_path / "full" / "curves.png").is_file()
    lines = (tmp_path / "full" / "history.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,")

    kt.train(_cfg(tiny_dataset, tmp_path / "half", epochs=1))
    resumed = kt.train(_cfg(tiny_dataset, tmp_path / "half", epochs=2,
                            resume=str(tmp_path / "half" / "last.pt")))
    assert resumed["global_step"] == full["global_step"] == 2
    for k, v in full["parameters"].items():
        assert torch.equal(v, resumed["parameters"][k]), k

    from keynet.weights import load_checkpoint
    model, meta, extra = load_checkpoint(tmp_path / "full" / "best.pt")
    assert meta["seed"] == 1 and "train_config" in meta and extra == {}
    assert (tmp_path / "full" / "best.pt").stat().st_size < 100_000


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    kt.train(_cfg(tiny_dataset, tmp_path, epochs=1))
    before = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(kt, "msip_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(kt.TrainingDiverged, match="last good checkpoint"):
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


def test_ddp_two_cpu_processes_one_step(tiny_dataset, tmp_path):
    import torch.multiprocessing as mp
    cfg = _cfg(tiny_dataset, tmp_path / "run", epochs=1, max_steps=1, val_last=False, val_every=5)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "params0.pt")
    p1 = torch.load(tmp_path / "params1.pt")
    init = kt.KeyNet(cfg.model_config())
    kt.init_tf_(init, cfg.seed)
    changed = False
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k  # gradients were averaged: replicas agree
        changed |= not torch.equal(p0[k], dict(init.named_parameters())[k].detach())
    assert changed
    assert (tmp_path / "run" / "last.pt").is_file()


def test_training_seed_does_not_change_the_dataset(tiny_dataset, tmp_path):
    """--seed varies the training only; the pairs and the photo split follow --data-seed."""
    a = _cfg(tiny_dataset, tmp_path / "a", seed=1).pair_config()
    b = _cfg(tiny_dataset, tmp_path / "b", seed=2).pair_config()
    assert a == b
    assert _cfg(tiny_dataset, tmp_path / "c", data_seed=5).pair_config().seed == 5


def test_train_cli_preset_and_folders(tmp_path):
    """train.py: --model-preset sets the architecture unless a flag says otherwise; several
    --data-dir folders are joined into one source."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", os.path.join(os.path.dirname(__file__), "..", "train.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    seen = {}
    cli.train = lambda cfg: seen.setdefault("cfg", cfg) and {"best_rep": 0, "best_epoch": 0, "epochs_done": 0,
                                                              "global_step": 0, "wall_time_s": 0, "out_dir": ""}
    cli.main(["--model-preset", "tiny", "--data-dir", "a", "b"])
    cfg = seen.pop("cfg")
    assert (cfg.num_blocks, cfg.num_filters, cfg.num_levels) == (1, 1, 3)
    assert cfg.data_dir == os.pathsep.join(["a", "b"])
    cli.main(["--model-preset", "tiny", "--num-filters", "2"])
    assert seen["cfg"].num_filters == 2 and seen["cfg"].num_blocks == 1
