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

import sys

from hardnet.affnet_training import TrainConfig, export_weights, train
from keynet.base.cli import ArgumentParser

from .common import patch_training_config, patch_training_parser, run_patch_training


def build_parser() -> ArgumentParser:
    return patch_training_parser(__doc__, TrainConfig(), "pretrained_nets/affnet.pt")


def parse_config(argv):
    return patch_training_config(build_parser(), TrainConfig(), "train-affnet", argv)


def main(argv=None) -> int:
    return run_patch_training(argv, parse_config, train, export_weights,
                              lambda last: f"epoch {last['epoch']}, val FPR95 {last.get('val_fpr95', float('nan')):.4f}")


if __name__ == "__main__":
    sys.exit(main())
