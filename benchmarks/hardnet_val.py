#!/usr/bin/env python
"""Validation metrics of HardNet checkpoints on the held-out pairs of a patch-pair cache
(the same 3000 pairs and negatives as the trainer: FPR95 with other-photo and same-photo
negatives, NN accuracy). Used to add the same-photo FPR95 to runs trained before it existed.

  python benchmarks/hardnet_val.py --dataset-dir datasets/hardnet_imagenet runs/hardnet_main/last.pt
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from hardnet import HardNet, load_hardnet  # noqa: E402
from hardnet.data import load_split  # noqa: E402
from hardnet.training import HardNetConfig, init_weights, same_photo_partners, validate, validation_indices  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="HardNet weights; 'init' = the untrained initialisation")
    ap.add_argument("--dataset-dir", default="datasets/hardnet_imagenet")
    ap.add_argument("--val-pairs", type=int, default=HardNetConfig.val_pairs)
    ap.add_argument("--val-block", type=int, default=HardNetConfig.val_block)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    val = load_split(args.dataset_dir, "val")
    idx, partner = validation_indices(val, args.val_pairs, args.seed)
    same = same_photo_partners(val, idx, args.seed)
    for c in args.checkpoints:
        if c == "init":
            torch.manual_seed(args.seed)
            model = HardNet()
            init_weights(model, HardNetConfig.init_gain)
        else:
            model, _ = load_hardnet(c)
        v = validate(model, val, idx, partner, "cpu", args.val_block, same)
        print(json.dumps({"checkpoint": c, **{k: round(x, 4) for k, x in v.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
