"""Train the keypoint orientation network (OriNet) from a folder of photos (docs/rotation.md).

Patch pairs with rotations over the whole circle are generated once from the photos (the
HardNet pair generator with --max-angle 180: random homographies + photometric changes,
keypoints from OpenCV DoG or Key.Net) and cached in --dataset-dir; the network learns, with
no labels, to turn its estimate with the patch (loss 1 - cos(ori(B) - ori(A) - angle)).
Validation: mean angular error on pairs from held-out photos, next to the classical
dominant gradient orientation on the same pairs. Every option is generated from the
configuration dataclasses (hardnet.orientation_training.TrainConfig).

Example:
  python train_orientation.py --image-dir PHOTOS --out-dir runs/orinet --export pretrained_nets/orinet.pt
  python train_orientation.py ... --resume            # continue from <out-dir>/last.pt
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from hardnet import HardNetWeightsError
from hardnet.orientation_training import TrainConfig, export_weights, train
from kpcore.cli import ArgumentParser, add_config_args, config_from_args
from kpcore.training import TrainingDiverged

from ..weights import WeightsError
from .train_hardnet import keynet_keypoints


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
                           "command": "python train_orientation.py " + " ".join(shlex.quote(a) for a in argv)})
    return cfg, args


def main(argv=None) -> int:
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
    except (TrainingDiverged, FileNotFoundError, ValueError, WeightsError, HardNetWeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = summary["history"][-1]
    logging.info("done: epoch %d, val mean angular error %.2f deg (dominant gradient: %.2f deg)",
                 last["epoch"], last["val_mean_err"], last.get("val_gradient_mean_err", float("nan")))
    if args.export:
        src = Path(cfg.out_dir) / f"{args.export_from}.pt"
        export_weights(src, args.export, command=cfg.command)
        logging.info("exported %s -> %s (weights and metadata, no optimiser state)", src, args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
