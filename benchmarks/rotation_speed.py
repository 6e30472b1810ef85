"""Cost of rotation-aware detection: seconds per image of the Key.Net detector (multi-scale,
1500 points, the default engine) as the official extraction, with the rotation average over
the four right angles, and over eight turns (the right angles and the 45-degree turns, the
default of ``--upright false``), all with sub-pixel points except the first. Also the whole
oriented extraction (detector + OriNet + HardNet on rotated patches) with eight turns.

    python benchmarks/rotation_speed.py --data-dir ../shared/data/hsequences-mini \\
        ../shared/data/hsequences-extra
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector, load_orientation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", nargs="+", required=True, help="HPatches-layout folder(s): image 1 of each sequence")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    images = [p for d in args.data_dir for p in sorted(Path(d).glob("*/1.ppm"))]
    if not images:
        print(f"[ERROR] no <sequence>/1.ppm under {', '.join(args.data_dir)}", file=sys.stderr)
        return 2
    configs = {
        "official (upright)": dict(),
        "rotation average, 4 turns": dict(rotation_average=True, rotation_average_turns=4, subpixel=True),
        "rotation average, 8 turns": dict(rotation_average=True, rotation_average_turns=8, subpixel=True),
    }
    rows = []
    for label, kw in configs.items():
        det = load_detector("default", device=args.device, **kw)
        det.detect(str(images[0]))  # warm-up
        t0 = time.perf_counter()
        for p in images:
            det.detect(str(p))
        rows.append((label, (time.perf_counter() - t0) / len(images)))
    ex = Extractor(load_detector("default", device=args.device, rotation_average=True, subpixel=True),
                   load_descriptor("default", device=args.device), load_orientation("learned", device=args.device))
    ex.features(str(images[0]))
    t0 = time.perf_counter()
    for p in images:
        ex.features(str(p))
    rows.append(("whole --upright false extraction (8 turns, OriNet, HardNet)", (time.perf_counter() - t0) / len(images)))
    print(f"{len(images)} images, device {args.device}, {torch.get_num_threads()} torch threads")
    print("| detection | s / image | x official |")
    print("|---|---|---|")
    for label, dt in rows:
        print(f"| {label} | {dt:.2f} | {dt / rows[0][1]:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
