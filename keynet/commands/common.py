"""What several commands share and that is not an option: the user errors that end a
command with one line and exit code 2, and the body of the patch-network training commands.
Commands import this module and :mod:`keynet.commands.options`, never each other."""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

from hardnet import HardNetWeightsError
from keynet.base.cli import ArgumentParser, add_config_args, config_from_args
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


def patch_training_parser(description: str, config: Any, example_export: str) -> ArgumentParser:
    """The parser of a patch-network training command: ``--threads``, ``--export``,
    ``--export-from`` and the options generated from the training configuration ``config``."""
    p = ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--export", default=None,
                   help="after training, write <out-dir>/best.pt (or --export-from) to this path without the "
                        f"optimiser state (e.g. {example_export})")
    p.add_argument("--export-from", default="best", choices=("best", "last"),
                   help="which checkpoint of the run --export writes")
    add_config_args(p, config)
    return p


def patch_training_config(parser: ArgumentParser, config: Any, command: str, argv) -> Tuple[Any, Any]:
    """``(configuration, arguments)`` of a patch-network training command: the photo folders
    joined by ``os.pathsep`` and the command line recorded."""
    args = parser.parse_args(argv)
    cfg = config_from_args(config, args)
    image_dir = os.pathsep.join(cfg.image_dir) if isinstance(cfg.image_dir, (list, tuple)) else cfg.image_dir
    return dataclasses.replace(cfg, image_dir=image_dir,
                               command=f"keynet {command} " + " ".join(shlex.quote(a) for a in argv)), args


@dataclasses.dataclass(frozen=True)
class PatchTrainingCommand:
    """A patch-network training command built from its task alone (``keynet
    train-orientation``, ``train-affnet``): the command's ``name`` and help text (``doc``),
    the task's configuration class, ``train`` and ``export_weights``, the example path of
    ``--export`` and ``done_line`` (the last epoch's history row -> the closing line)."""

    name: str
    doc: str
    config_type: Callable[[], Any]
    train: Callable[..., Dict[str, Any]]
    export_weights: Callable[..., Any]
    example_export: str
    done_line: Callable[[Dict[str, Any]], str]

    def build_parser(self) -> ArgumentParser:
        """The command's parser (:func:`patch_training_parser`)."""
        return patch_training_parser(self.doc, self.config_type(), self.example_export)

    def parse_config(self, argv) -> Tuple[Any, Any]:
        """``(configuration, arguments)`` of ``argv`` (:func:`patch_training_config`)."""
        return patch_training_config(self.build_parser(), self.config_type(), self.name, argv)

    def main(self, argv=None) -> int:
        """Run the command (:func:`run_patch_training`); the exit code."""
        return run_patch_training(argv, self.parse_config, self.train, self.export_weights, self.done_line)
