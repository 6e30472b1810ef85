"""What several commands share and that is not an option: the user errors that end a
command with one line and exit code 2, and the body of the patch-network training commands.
Commands import this module and :mod:`keynet.commands.options`, never each other."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch

from hardnet import HardNetWeightsError
from keynet.base.images import ImageReadError
from keynet.base.training import TrainingDiverged
from keynet.detection import ImageTooSmallError
from keynet.pipeline import matching
from keynet.pipeline.extraction import load_detector
from keynet.pipeline.pairs import PairsError
from keynet.pipeline.reconstruction import ReconstructionError
from keynet.weights import WeightsError

#: The exceptions of the matching / reconstruction / demo commands that are the user's: one line, exit 2.
USER_ERRORS = (ReconstructionError, PairsError, matching.MatchingError, ImageReadError, ImageTooSmallError,
               WeightsError, HardNetWeightsError, FileNotFoundError, ValueError)


def keynet_keypoints(weights: str, num_points: int):
    """A keypoint function (``hardnet.data.KeypointFn``) from Key.Net weights."""
    det = load_detector(weights, num_points=num_points)
    return lambda grey: det.detect(det.prepare(np.asarray(grey, dtype=np.float32)))


def run_patch_training(argv, parse_config, train, export_weights, done_line) -> int:
    """The body of the patch-network training commands (HardNet, OriNet): parse, train on
    pairs whose keypoints come from DoG or Key.Net, report ``done_line(last history row)``,
    export; user errors -> one line and exit code 2."""
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
    except (TrainingDiverged, FileNotFoundError, ValueError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.info("done: %s", done_line(summary["history"][-1]))
    if args.export:
        src = Path(cfg.out_dir) / f"{args.export_from}.pt"
        export_weights(src, args.export, command=cfg.command)
        logging.info("exported %s -> %s (weights and metadata, no optimiser state)", src, args.export)
    return 0
