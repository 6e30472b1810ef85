"""Train Key.Net on synthetic pairs with the M-SIP loss (see docs/training.md).

Defaults follow the official TensorFlow ``train_network.py``; every option is generated
from the configuration dataclasses (keynet.training.TrainConfig). Multi-GPU:
``torchrun --nproc_per_node=N train.py ...``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from keynet.base.cli import ArgumentParser, add_config_args, config_from_args, set_config_defaults
from keynet.model import PRESETS
from keynet.training import TrainConfig, TrainingDiverged, train


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model-preset", default=None, choices=tuple(PRESETS),
                   help="named architecture: keynet, or tiny = Tiny-Key.Net (sets the network defaults; "
                        "explicit network options win)")
    add_config_args(p, TrainConfig())
    return p


def parse_config(argv) -> TrainConfig:
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].model_preset
    if preset is not None:
        set_config_defaults(parser, PRESETS[preset], "model.")
    args = parser.parse_args(argv)
    cfg = config_from_args(TrainConfig(), args)
    return cfg.__class__(**{**cfg.__dict__, "data_dir": os.pathsep.join(cfg.data_dir),
                            "command": "python train.py " + " ".join(shlex.quote(a) for a in argv)})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = train(cfg)
    except (TrainingDiverged, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"best validation repeatability {summary['best']:.2f} at epoch {summary['best_epoch']}; "
          f"{summary['epochs_done']} epochs, {summary['global_step']} steps, {summary['wall_time_s']:.0f} s; "
          f"checkpoints in {summary['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
