#!/usr/bin/env python
"""Detection time of several Key.Net weights files (e.g. Key.Net vs Tiny-Key.Net) on the
same image, timed in alternation (round-robin) so that a busy machine slows every file
alike; medians and ratios to the first file::

    python benchmarks/detector_speed.py --weights keynet=pretrained_nets/keynet.pt \\
        tiny=pretrained_nets/tiny_keynet.pt --size 800x640 --rounds 7 --threads 2

Two timings per file: the full multi-scale detection (official settings, 1500 points) and
the network alone on the same pyramid levels (the engine's fast path).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import keynet  # noqa: E402
from keynet.detection import build_pyramid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True, help="NAME=PATH of Key.Net weights")
    ap.add_argument("--size", default="800x640", help="WxH of the test image (test_im resized)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    w, h = map(int, args.size.lower().split("x"))
    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    img /= img.max()
    dets = {}
    for spec in args.weights:
        name, _, path = spec.rpartition("=")
        dets[name or Path(path).stem] = keynet.load_detector(path, device="cpu")
    first = next(iter(dets.values()))
    levels = [torch.from_numpy(lv.image.astype(np.float32))[None, None] for lv in build_pyramid(img, first.settings)]
    times = {n: {"detect": [], "network": []} for n in dets}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name, det in dets.items():
            t = time.perf_counter()
            det.detect_prepared(img)
            t1 = time.perf_counter()
            with torch.no_grad():
                for x in levels:
                    det.engine(x)
            t2 = time.perf_counter()
            if r:
                times[name]["detect"].append(1000 * (t1 - t))
                times[name]["network"].append(1000 * (t2 - t1))
    base = next(iter(times))
    print(f"{w}x{h}, {args.threads} threads, median of {args.rounds} alternating rounds\n")
    print("| weights | parameters | detection (ms) | ratio | network only (ms) | ratio |\n|---|---:|---:|---:|---:|---:|")
    for name, det in dets.items():
        d, n = statistics.median(times[name]["detect"]), statistics.median(times[name]["network"])
        d0, n0 = statistics.median(times[base]["detect"]), statistics.median(times[base]["network"])
        params = sum(p.numel() for p in det.model.parameters())
        print(f"| {name} | {params} | {d:.0f} | {d0 / d:.2f}x faster | {n:.0f} | {n0 / n:.2f}x faster |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
