#!/usr/bin/env python
"""Train Key.Net on synthetic pairs with the M-SIP loss (see docs/training.md).

Defaults follow the official TensorFlow ``train_network.py``. Multi-GPU:
``torchrun --nproc_per_node=N train.py ...``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from kpcore.cli import str2bool as _bool
from keynet.model import PRESETS
from keynet.training import TrainConfig, TrainingDiverged, train


def _ints(s: str):
    return tuple(int(x) for x in s.split(",") if x.strip())


def _floats(s: str):
    return tuple(float(x) for x in s.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", nargs="+", default=[d.data_dir],
                   help="folder(s) of photos the synthetic pairs are made from (several: their union)")
    g.add_argument("--dataset-dir", default=d.dataset_dir, help="cache of the generated pairs (.npy + manifest)")
    g.add_argument("--out-dir", default=d.out_dir, help="run folder: checkpoints, history.csv, curves.png")
    g.add_argument("--max-angle", type=float, default=d.max_angle, help="max rotation (degrees)")
    g.add_argument("--max-scale", type=float, default=d.max_scale, help="max scale of the synthetic view")
    g.add_argument("--max-shearing", type=float, default=d.max_shearing, help="max x-shear")
    g.add_argument("--patch-size", type=int, default=d.patch_size, help="training patch size")
    g.add_argument("--val-patch-size", type=int, default=d.val_patch_size, help="validation patch size")
    g.add_argument("--num-train", type=int, default=d.num_train, help="max training pairs to generate")
    g.add_argument("--num-val", type=int, default=d.num_val, help="max validation pairs to generate")
    g.add_argument("--val-images", type=int, default=d.val_images, help="photos reserved for validation")
    g.add_argument("--pairs-per-image", type=int, default=d.pairs_per_image, help="passes over the photos")
    g.add_argument("--photometric", type=_bool, default=d.photometric, help="colour jitter on the destination")
    g.add_argument("--data-seed", type=int, default=d.data_seed,
                   help="seed of the pair generation and the train/val photo split (apart from --seed, so that "
                        "training seeds share one dataset)")
    g.add_argument("--gen-workers", type=int, default=d.gen_workers, help="processes generating pairs")
    g = p.add_argument_group("model")
    g.add_argument("--variant", default=d.variant, choices=("tf", "repro", "pt"))
    g.add_argument("--num-filters", type=int, default=d.num_filters)
    g.add_argument("--num-learnable-blocks", dest="num_blocks", type=int, default=d.num_blocks)
    g.add_argument("--num-levels-within-net", dest="num_levels", type=int, default=d.num_levels)
    g.add_argument("--factor-scaling-pyramid", dest="factor", type=float, default=d.factor)
    g.add_argument("--conv-kernel-size", dest="kernel_size", type=int, default=d.kernel_size)
    g.add_argument("--model-preset", default=None, choices=tuple(PRESETS),
                   help="named architecture (default filters/blocks/levels; explicit flags win): keynet, or tiny = Tiny-Key.Net")
    g.add_argument("--handcrafted", type=_bool, default=d.handcrafted,
                   help="false: the learnable blocks see the image itself, not the derivative channels (ablation)")
    g.add_argument("--init", default=d.init, choices=("tf", "torch"), help="weight initialisation")
    g = p.add_argument_group("optimisation")
    g.add_argument("--num-epochs", dest="epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", "--init-initial-learning-rate", dest="lr", type=float, default=d.lr)
    g.add_argument("--learning-rate-decay-factor", dest="lr_decay", type=float, default=d.lr_decay)
    g.add_argument("--num-epochs-before-decay", dest="decay_epochs", type=float, default=d.decay_epochs)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="Adam L2 weight decay (the official code declared 0.1 but never applied it)")
    g.add_argument("--pairs-per-epoch", type=int, default=d.pairs_per_epoch,
                   help="pairs per epoch (0: all training pairs)")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many steps (0: no limit)")
    g = p.add_argument_group("loss")
    g.add_argument("--msip-sizes", type=_ints, default=d.msip_sizes, help="comma-separated window sizes")
    g.add_argument("--msip-factors", type=_floats, default=d.msip_factors, help="comma-separated weights")
    g.add_argument("--softmax-scope", default=d.softmax_scope, choices=("image", "batch"),
                   help="window-weight softmax per image (official) or over the batch (reproduction)")
    g.add_argument("--weight-coordinates", dest="coordinate_weighting", type=_bool, default=d.coordinate_weighting)
    g = p.add_argument_group("validation")
    g.add_argument("--epochs-val", dest="val_every", type=int, default=d.val_every)
    g.add_argument("--val-pairs", type=int, default=d.val_pairs, help="validation pairs used (0: all)")
    g.add_argument("--val-batch", type=int, default=d.val_batch)
    g.add_argument("--nms-size", type=int, default=d.nms_size)
    g.add_argument("--num-points", type=int, default=d.num_points)
    g.add_argument("--overlap", type=float, default=d.overlap)
    g.add_argument("--val-relu", type=_bool, default=d.val_relu)
    g.add_argument("--val-last", type=_bool, default=d.val_last, help="also validate after the last epoch")
    g.add_argument("--patience", type=int, default=d.patience,
                   help="stop after more than this many non-improving validations")
    g = p.add_argument_group("run")
    g.add_argument("--random-seed", "--seed", dest="seed", type=int, default=d.seed)
    g.add_argument("--resume", default=None, help="resume from a run's last.pt")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    g.add_argument("--progress", type=_bool, default=d.progress)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].model_preset
    if preset is not None:  # the preset's architecture, unless a flag says otherwise
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    del args.model_preset
    args.data_dir = os.pathsep.join(args.data_dir)
    cfg = TrainConfig(**vars(args), command="python train.py " + " ".join(shlex.quote(a) for a in argv))
    try:
        summary = train(cfg)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"best validation repeatability {summary['best_rep']:.2f} at epoch {summary['best_epoch']}; "
          f"{summary['epochs_done']} epochs, {summary['global_step']} steps, {summary['wall_time_s']:.0f} s; "
          f"checkpoints in {summary['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
