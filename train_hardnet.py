#!/usr/bin/env python
"""Train the HardNet descriptor from a folder of photos (see docs/hardnet.md).

Patch pairs are generated once from the photos (random homographies + photometric
changes, keypoints from OpenCV DoG or Key.Net) and cached in --dataset-dir; training
uses the HardNet loss (hardest in-batch negative, anchor swap, margin 1). The defaults
are a short CPU schedule (Adam); --paper-defaults selects the HardNet paper's SGD
settings (lr 10 with dampening 0.9, batch 1024, wd 1e-4, linear decay to 0).

Example:
  python train_hardnet.py --image-dir ../shared/data/imagenet-sample \\
      --dataset-dir datasets/hardnet_imagenet --out-dir runs/hardnet_main
  python train_hardnet.py ... --resume            # continue from <out-dir>/last.pt
  python train_hardnet.py ... --export pretrained_nets/hardnet.pt   # after training
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

import torch

from hardnet.data import PatchPairConfig, prepare_patch_pairs
from hardnet.training import PAPER_DEFAULTS, TrainConfig, export_weights, train

# data options whose name collides with a training option
_DATA_RENAME = {"seed": "data_seed"}


def _add_fields(group, cls, rename=None):
    rename = rename or {}
    for f in dataclasses.fields(cls):
        name = rename.get(f.name, f.name)
        flag = "--" + name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type, f.type) if isinstance(f.type, str) else f.type
            group.add_argument(flag, dest=name, type=typ, default=f.default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-dir", default="../shared/data/imagenet-sample", help="folder of training photos")
    p.add_argument("--max-images", type=int, default=0, help="use only the first N photos (0 = all)")
    p.add_argument("--dataset-dir", default="datasets/hardnet_imagenet", help="patch-pair cache")
    p.add_argument("--out-dir", default="runs/hardnet_main", help="run folder: last.pt, best.pt, history")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/last.pt if present")
    p.add_argument("--regenerate", action="store_true", help="regenerate the patch pairs even if cached")
    p.add_argument("--paper-defaults", action="store_true",
                   help="HardNet paper optimisation: " + ", ".join(f"{k}={v}" for k, v in PAPER_DEFAULTS.items())
                   + " (explicit flags still win)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke runs)")
    p.add_argument("--export", default=None,
                   help="after training, write <out-dir>/best.pt (or --export-from) to this path without the "
                        "optimiser state (e.g. pretrained_nets/hardnet.pt)")
    p.add_argument("--export-from", default="best", choices=("best", "last"))
    p.add_argument("--no-progress", action="store_true")
    _add_fields(p.add_argument_group("patch pairs (hardnet.data.PatchPairConfig)"), PatchPairConfig, _DATA_RENAME)
    _add_fields(p.add_argument_group("training (hardnet.training.TrainConfig)"), TrainConfig)
    return p


def parse_args(argv):
    """Parsed arguments, with the paper defaults filled in for options not given."""
    args = build_parser().parse_args(argv)
    if args.paper_defaults:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        given |= {"anchor_swap" for a in argv if a == "--no-anchor-swap"}
        for k, v in PAPER_DEFAULTS.items():
            if k not in given:
                setattr(args, k, v)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data_kw = {f.name: getattr(args, _DATA_RENAME.get(f.name, f.name)) for f in dataclasses.fields(PatchPairConfig)}
    train_kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        dcfg, tcfg = PatchPairConfig(**data_kw), TrainConfig(**train_kw)
    except ValueError as e:
        parser.error(str(e))
    logging.info("command: python train_hardnet.py %s", " ".join(shlex.quote(a) for a in argv))
    prepare_patch_pairs(args.image_dir, args.dataset_dir, dcfg, progress=not args.no_progress,
                        force=args.regenerate, max_images=args.max_images)
    history = train(args.dataset_dir, args.out_dir, tcfg, resume=args.resume, device=args.device,
                    progress=not args.no_progress, max_steps=args.max_steps)
    last = history[-1]
    logging.info("done: epoch %d, val FPR95 %.4f, NN acc %.4f", last["epoch"], last["val_fpr95"], last["val_nn_acc"])
    if args.export:
        src = Path(args.out_dir) / f"{args.export_from}.pt"
        export_weights(src, args.export, command="python train_hardnet.py " + " ".join(shlex.quote(a) for a in argv))
        logging.info("exported %s -> %s (weights and metadata, no optimiser state)", src, args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
