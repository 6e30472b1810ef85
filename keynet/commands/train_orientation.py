"""Train the keypoint orientation network (OriNet) from a folder of photos (docs/rotation.md).

Patch pairs with rotations over the whole circle are generated once from the photos (the
HardNet pair generator with --max-angle 180: random homographies + photometric changes,
keypoints from OpenCV DoG or Key.Net) and cached in --dataset-dir; the network learns, with
no labels, to turn its estimate with the patch (loss 1 - cos(ori(B) - ori(A) - angle)).
Validation: mean angular error on pairs from held-out photos, next to the classical
dominant gradient orientation on the same pairs. Every option is generated from the
configuration dataclasses (hardnet.orientation_training.TrainConfig).

Example:
  keynet train-orientation --image-dir PHOTOS --out-dir runs/orinet --export pretrained_nets/orinet.pt
  keynet train-orientation ... --resume            # continue from <out-dir>/last.pt
"""
from __future__ import annotations

import os
import shlex
import sys

from hardnet.orientation_training import TrainConfig, export_weights, train
from keynet.base.cli import ArgumentParser, add_config_args, config_from_args

from .common import run_patch_training


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--export", default=None,
                   help="after training, write <out-dir>/best.pt (or --export-from) to this path without the "
                        "optimiser state (e.g. pretrained_nets/orinet.pt)")
    p.add_argument("--export-from", default="best", choices=("best", "last"),
                   help="which checkpoint of the run --export writes")
    add_config_args(p, TrainConfig())
    return p


def parse_config(argv):
    args = build_parser().parse_args(argv)
    cfg = config_from_args(TrainConfig(), args)
    cfg = cfg.__class__(**{**cfg.__dict__, "image_dir": os.pathsep.join(cfg.image_dir),
                           "command": "keynet train-orientation " + " ".join(shlex.quote(a) for a in argv)})
    return cfg, args


def main(argv=None) -> int:
    return run_patch_training(argv, parse_config, train, export_weights,
                              lambda last: f"epoch {last['epoch']}, val mean angular error {last['val_mean_err']:.2f} deg "
                                           f"(dominant gradient: {last.get('val_gradient_mean_err', float('nan')):.2f} deg)")


if __name__ == "__main__":
    sys.exit(main())
