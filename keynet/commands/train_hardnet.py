"""Train the HardNet descriptor from a folder of photos (see docs/hardnet.md).

Patch pairs are generated once from the photos (random homographies + photometric
changes, keypoints from OpenCV DoG or Key.Net) and cached in --dataset-dir; training
uses the HardNet loss (hardest in-batch negative, anchor swap, margin 1) in the project's
one training loop (the same options as train.py). The defaults are a short CPU schedule
(Adam); --paper-defaults selects the HardNet paper's SGD settings (lr 10 with dampening
0.9, batch 1024, wd 1e-4, linear decay to 0). Every option is generated from the
configuration dataclasses (hardnet.training.TrainConfig).

Example:
  keynet train-hardnet --image-dir PHOTOS --dataset-dir datasets/hardnet_pairs --out-dir runs/hardnet
  keynet train-hardnet ... --resume            # continue from <out-dir>/last.pt
  keynet train-hardnet ... --export pretrained_nets/hardnet.pt   # after training
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from hardnet.training import PAPER_DEFAULTS, TrainConfig, export_weights, train
from keynet.base.cli import ArgumentParser, add_bool_flag, add_config_args, config_from_args, set_config_defaults

from .common import run_patch_training


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
    extra = cfg.extra_pairs if isinstance(cfg.extra_pairs, (list, tuple)) else [cfg.extra_pairs] if cfg.extra_pairs else []
    cfg = cfg.__class__(**{**cfg.__dict__, "image_dir": os.pathsep.join(cfg.image_dir),
                           "extra_pairs": os.pathsep.join(extra),
                           "command": "keynet train-hardnet " + " ".join(shlex.quote(a) for a in argv)})
    return cfg, args


def main(argv=None) -> int:
    return run_patch_training(argv, parse_config, train, export_weights,
                              lambda last: f"epoch {last['epoch']}, val FPR95 {last['val_fpr95']:.4f}, "
                                           f"NN acc {last['val_nn_acc']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
