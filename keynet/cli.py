"""``keynet``: one command for every job of the project.

``keynet <command> [options]``; ``keynet <command> -h`` lists the command's options with
their defaults. Each command is also reachable as its original script
(``extract_multiscale_features.py``, ``hsequences_bench.py``, ...), with the same options.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Tuple

from .commands import (baselines, bench, bench_rotation, convert, download, extract, match, match_demo, reconstruct,
                       train, train_hardnet, train_orientation)

#: command -> (main function, one-line description, original script)
COMMANDS: Dict[str, Tuple[Callable[[Optional[List[str]]], int], str, str]] = {
    "extract": (extract.main, "Key.Net keypoints + HardNet descriptors for an image list",
                "extract_multiscale_features.py"),
    "match": (match.main, "match the images of a folder (hloc features.h5 / matches.h5)", "match_features.py"),
    "reconstruct": (reconstruct.main, "COLMAP reconstruction of an image folder (pycolmap)", "reconstruct.py"),
    "demo": (match_demo.main, "match two images and draw the matches into a PNG", "match_demo.py"),
    "bench": (bench.main, "HSequences repeatability / matching benchmark of extracted features",
              "hsequences_bench.py"),
    "bench-rotation": (bench_rotation.main, "rotation benchmark: methods side by side on rotated HSequences images",
                       "benchmarks/rotation_bench.py"),
    "baselines": (baselines.main, "extract classical baselines (SIFT, ORB, ...) in the same layout",
                  "extract_baselines.py"),
    "train": (train.main, "train Key.Net on synthetic pairs from photos (M-SIP loss)", "train.py"),
    "train-hardnet": (train_hardnet.main, "train the HardNet descriptor from photos", "train_hardnet.py"),
    "train-orientation": (train_orientation.main, "train the keypoint orientation network (OriNet) from photos",
                          "train_orientation.py"),
    "convert": (convert.main, "convert any Key.Net weights file to the project format", "convert_weights.py"),
    "download": (download.main, "download HPatches, the published Key.Net weights or HardNet++", "-"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: keynet <command> [options]   (keynet <command> -h for the command's options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {desc}" + (f" (= {script})" if script != "-" else "")
              for name, (_, desc, script) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"keynet: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"keynet {name}"  # argparse shows it in the command's usage line
    return int(COMMANDS[name][0](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
