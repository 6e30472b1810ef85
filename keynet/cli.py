"""``keynet``: one command for every job of the project.

``keynet <command> [options]``; ``keynet <command> -h`` lists the command's options with
their defaults. Each command is also reachable as its original script
(``extract_multiscale_features.py``, ``hsequences_bench.py``, ...), with the same options.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Optional, Tuple

from . import __version__

#: command -> (module under keynet.commands, one-line description, original script); the
#: module is imported only when its command runs, so ``keynet --help`` imports no torch.
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "extract": ("extract", "Key.Net keypoints + HardNet descriptors for an image list", "extract_multiscale_features.py"),
    "match": ("match", "match the images of a folder (hloc features.h5 / matches.h5)", "-"),
    "reconstruct": ("reconstruct", "COLMAP reconstruction of an image folder (pycolmap)", "-"),
    "demo": ("match_demo", "match two images and draw the matches into a PNG", "-"),
    "bench": ("bench", "HSequences repeatability / matching benchmark of extracted features", "hsequences_bench.py"),
    "bench-rotation": ("bench_rotation", "rotation benchmark: methods side by side on rotated HSequences images", "-"),
    "bench-wxbs": ("bench_wxbs", "wide-baseline benchmark: WxBS (F), EVD (H) and synthetic extreme pairs", "-"),
    "baselines": ("baselines", "extract classical baselines (SIFT, ORB, ...) in the same layout", "-"),
    "train": ("train", "train Key.Net on synthetic pairs from photos (M-SIP loss)", "train.py"),
    "train-hardnet": ("train_hardnet", "train the HardNet descriptor from photos", "-"),
    "hardnet-data": ("hardnet_data", "make real-correspondence data for the descriptor: webcam, SfM-track and validation pairs", "-"),
    "train-affnet": ("train_affnet", "train the affine-shape network (AffNet) from photos", "-"),
    "train-orientation": ("train_orientation", "train the keypoint orientation network (OriNet) from photos", "-"),
    "convert": ("convert", "convert any Key.Net weights file to the project format", "-"),
    "download": ("download", "download HPatches, the published Key.Net weights or HardNet++", "-"),
}


def command_main(name: str) -> Callable[[Optional[List[str]]], int]:
    """The ``main`` function of command ``name`` (imports its module)."""
    return importlib.import_module(f"keynet.commands.{COMMANDS[name][0]}").main


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: keynet <command> [options]   (keynet <command> -h for the command's options;",
             "       keynet --version)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {desc}" + (f" (= {script})" if script != "-" else "")
              for name, (_, desc, script) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"keynet {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"keynet: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"keynet {name}"  # argparse shows it in the command's usage line
    return int(command_main(name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
