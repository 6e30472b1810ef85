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

from .common import PatchTrainingCommand

COMMAND = PatchTrainingCommand(
    "train-affnet", __doc__, TrainConfig, train, export_weights, "pretrained_nets/affnet.pt",
    lambda last: f"epoch {last['epoch']}, val FPR95 {last.get('val_fpr95', float('nan')):.4f}")
build_parser, parse_config, main = COMMAND.build_parser, COMMAND.parse_config, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
