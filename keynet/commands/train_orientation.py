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

import sys

from hardnet.orientation_training import TrainConfig, export_weights, train

from .common import PatchTrainingCommand

COMMAND = PatchTrainingCommand(
    "train-orientation", __doc__, TrainConfig, train, export_weights, "pretrained_nets/orinet.pt",
    lambda last: f"epoch {last['epoch']}, val mean angular error {last['val_mean_err']:.2f} deg "
                 f"(dominant gradient: {last.get('val_gradient_mean_err', float('nan')):.2f} deg)")
build_parser, parse_config, main = COMMAND.build_parser, COMMAND.parse_config, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
