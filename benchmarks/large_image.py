#!/usr/bin/env python
"""Memory and time of the default extraction (shipped Key.Net + HardNet, 1500 points) on
one large image: wall time, CPU time in user and kernel mode, and peak RSS of this
process. ``--whole-image`` runs the network on the whole image at once (no strips), as
before strips existed, for comparison. Run each setting in its own process (peak RSS is
per process)::

    python benchmarks/large_image.py --size 4000x3000
    python benchmarks/large_image.py --size 4000x3000 --whole-image
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from keynet.engine import EngineConfig  # noqa: E402
from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000", help="WxH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--whole-image", action="store_true", help="no strips (EngineConfig.strip_pixels = infinity)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    w, h = map(int, args.size.lower().split("x"))
    cam = cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    img = np.clip(img + np.random.default_rng(0).normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    det = load_detector(engine=EngineConfig(strip_pixels=1 << 62) if args.whole_image else None)
    ex = Extractor(det, load_descriptor())
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    kpts, desc = ex.extract(img)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{w}x{h}{' (whole image)' if args.whole_image else ''}: {len(kpts)} keypoints, "
          f"{wall:.1f} s wall, CPU {r1.ru_utime - r0.ru_utime:.1f} s user + {r1.ru_stime - r0.ru_stime:.1f} s "
          f"kernel, peak RSS {r1.ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
