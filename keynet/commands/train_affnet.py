"""Train the affine-shape network (AffNet) from a folder of photos (docs/hardnet.md, AffNet).

Patch pairs with random affine warps between the views (tilts up to about 6) are generated
once from the photos and cached in --dataset-dir (context patches and the local affine of
each pair); AffNet learns, through our frozen HardNet, the shape that makes the two
normalised patches describe alike (the hard-negative-constant loss of the AffNet paper).
Validation: FPR95 and nearest-neighbour accuracy of the normalised patches on pairs from
held-out photos, next to the identity shape and the second-moment iteration on the same
pairs. Every option is generated from the configuration dataclasses
(hardnet.affnet_training.TrainConfig).

Example:
  keynet train-affnet --image-dir PHOTOS --out-dir runs/affnet --export pretrained_nets/affnet.pt
  keynet train-affnet ... --resume            # continue from <out-dir>/last.pt
"""
from __future__ import annotations

import os
import shlex
import sys

from hardnet.affnet_training import TrainConfig, export_weights, train
from keynet.base.cli import ArgumentParser, add_config_args, config_from_args

from .common import run_patch_training


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--export", default=None,
                   help="after training, write <out-dir>/best.pt (or --export-from) to this path without the "
                        "optimiser state (e.g. pretrained_nets/affnet.pt)")
    p.add_argument("--export-from", default="best", choices=("best", "last"),
                   help="which checkpoint of the run --export writes")
    add_config_args(p, TrainConfig())
    return p


def parse_config(argv):
    args = build_parser().parse_args(argv)
    cfg = config_from_args(TrainConfig(), args)
    image_dir = os.pathsep.join(cfg.image_dir) if isinstance(cfg.image_dir, (list, tuple)) else cfg.image_dir
    cfg = cfg.__class__(**{**cfg.__dict__, "image_dir": image_dir,
                           "command": "keynet train-affnet " + " ".join(shlex.quote(a) for a in argv)})
    return cfg, args


def main(argv=None) -> int:
    return run_patch_training(argv, parse_config, train, export_weights,
                              lambda last: f"epoch {last['epoch']}, val FPR95 {last.get('val_fpr95', float('nan')):.4f}")


if __name__ == "__main__":
    sys.exit(main())
