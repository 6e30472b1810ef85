"""Train the HardNet descriptor from a folder of photos (see docs/hardnet.md).

Patch pairs are generated once from the photos (random homographies + photometric
changes, keypoints from OpenCV DoG or Key.Net) and cached in --dataset-dir; training
uses the HardNet loss (hardest in-batch negative, anchor swap, margin 1) in the project's
one training loop (the same options as train.py). The defaults are a short CPU schedule
(Adam); --paper-defaults selects the HardNet paper's SGD settings (lr 10 with dampening
0.9, batch 1024, wd 1e-4, linear decay to 0). Every option is generated from the
configuration dataclasses (hardnet.training.TrainConfig).

Example:
  python train_hardnet.py --image-dir PHOTOS --dataset-dir datasets/hardnet_pairs --out-dir runs/hardnet
  python train_hardnet.py ... --resume            # continue from <out-dir>/last.pt
  python train_hardnet.py ... --export pretrained_nets/hardnet.pt   # after training
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from hardnet.training import PAPER_DEFAULTS, TrainConfig, export_weights, train
from kpcore.cli import ArgumentParser, add_bool_flag, add_config_args, config_from_args, set_config_defaults
from kpcore.training import TrainingDiverged
from ..extract import load_detector
from ..weights import WeightsError


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    add_bool_flag(p, "--paper-defaults", False,
                  "HardNet paper optimisation: " + ", ".join(f"{k}={v}" for g in PAPER_DEFAULTS.values()
                                                             for k, v in g.items())
                  + " (explicit options still win)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--export", default=None,
                   help="after training, write <out-dir>/best.pt (or --export-from) to this path without the "
                        "optimiser state (e.g. pretrained_nets/hardnet.pt) (default: none, no export)")
    p.add_argument("--export-from", default="best", choices=("best", "last"),
                   help="which checkpoint of <out-dir> --export writes")
    add_config_args(p, TrainConfig())
    return p


def parse_config(argv) -> TrainConfig:
    """The configuration, with the paper defaults filled in for options not given."""
    parser = build_parser()
    if parser.parse_known_args(argv)[0].paper_defaults:
        for group, values in PAPER_DEFAULTS.items():
            set_config_defaults(parser, values, group + ".")
    args = parser.parse_args(argv)
    cfg = config_from_args(TrainConfig(), args)
    cfg = cfg.__class__(**{**cfg.__dict__, "image_dir": os.pathsep.join(cfg.image_dir),
                           "command": "python train_hardnet.py " + " ".join(shlex.quote(a) for a in argv)})
    return cfg, args


def keynet_keypoints(weights: str, num_points: int):
    """A keypoint function (``hardnet.data.KeypointFn``) from Key.Net weights."""
    det = load_detector(weights, num_points=num_points)
    return lambda grey: det.detect(det.prepare(np.asarray(grey, dtype=np.float32)))


def run_patch_training(argv, parse_config, train, export_weights, done_line) -> int:
    """The body of the patch-network training commands (HardNet, OriNet): parse, train on
    pairs whose keypoints come from DoG or Key.Net, report ``done_line(last history row)``,
    export; user errors -> one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg, args = parse_config(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        kp_fn = (keynet_keypoints(cfg.data.keynet_weights, max(4 * cfg.data.points_per_view, 200))
                 if cfg.data.detector == "keynet" else None)
        summary = train(cfg, kp_fn)
    except (TrainingDiverged, FileNotFoundError, ValueError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.info("done: %s", done_line(summary["history"][-1]))
    if args.export:
        src = Path(cfg.out_dir) / f"{args.export_from}.pt"
        export_weights(src, args.export, command=cfg.command)
        logging.info("exported %s -> %s (weights and metadata, no optimiser state)", src, args.export)
    return 0


def main(argv=None) -> int:
    return run_patch_training(argv, parse_config, train, export_weights,
                              lambda last: f"epoch {last['epoch']}, val FPR95 {last['val_fpr95']:.4f}, "
                                           f"NN acc {last['val_nn_acc']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
