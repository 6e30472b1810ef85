#!/usr/bin/env python
"""Is a thermal image a grey-level inversion of the visible one? A measurement on real pairs.

For each pair with a ground-truth homography (the multimodal set's visible / thermal and colour /
near-infrared pairs; optionally webcam frame pairs, identity ground truth, as a control), image B is
warped onto image A and the normalised cross-correlation (NCC) of the two is computed in 32 x 32
windows (stride 16) where both are textured (grey-level standard deviation >= ``--min-std``).
NCC near +1: the same local pattern; near -1: the pattern inverted; near 0: unrelated. Prints,
per group, the share of windows with NCC above +0.3, below -0.3, and the median NCC.

    python benchmarks/cross_sensor_polarity.py --multimodal-dir MULTIMODAL \
        [--webcam-dir WEBCAMS --webcams mexico stlouis]

This decides whether a simulated inversion stands for the thermal change (docs/hardnet.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardnet.real_validation import EvalSetError, multimodal_eval_pairs, webcam_eval_pairs  # noqa: E402

WINDOW, STRIDE = 32, 16


def window_ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray, min_std: float) -> np.ndarray:
    """NCC of ``a`` and ``b`` in every WINDOW x WINDOW window (stride STRIDE) that lies in
    ``valid`` and where both have a standard deviation of at least ``min_std``."""
    out = []
    h, w = a.shape
    for y in range(0, h - WINDOW + 1, STRIDE):
        for x in range(0, w - WINDOW + 1, STRIDE):
            if not valid[y:y + WINDOW, x:x + WINDOW].all():
                continue
            pa, pb = a[y:y + WINDOW, x:x + WINDOW].ravel(), b[y:y + WINDOW, x:x + WINDOW].ravel()
            sa, sb = pa.std(), pb.std()
            if sa < min_std or sb < min_std:
                continue
            out.append(float(np.mean((pa - pa.mean()) * (pb - pb.mean())) / (sa * sb)))
    return np.asarray(out)


def pair_ncc(image_a: str, image_b: str, h_ab: np.ndarray, min_std: float, max_side: int) -> np.ndarray:
    a = cv2.imread(image_a, cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(image_b, cv2.IMREAD_GRAYSCALE)
    if a is None or b is None:
        raise EvalSetError(f"cannot read {image_a if a is None else image_b}")
    s = min(1.0, max_side / float(max(a.shape)))
    sa = np.diag([s, s, 1.0])
    a_small = cv2.resize(a, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else a
    # B's pixels -> A's (0-based), then A's -> the resized A's
    h_ba_small = sa @ np.linalg.inv(np.asarray(h_ab, np.float64))
    size = (a_small.shape[1], a_small.shape[0])
    warped = cv2.warpPerspective(b.astype(np.float32), h_ba_small, size, flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.ones_like(b, np.float32), h_ba_small, size, flags=cv2.INTER_NEAREST) > 0.5
    return window_ncc(a_small.astype(np.float32), warped, valid, min_std)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--multimodal-dir", required=True)
    ap.add_argument("--webcam-dir")
    ap.add_argument("--webcams", nargs="*", default=[])
    ap.add_argument("--min-std", type=float, default=8.0)
    ap.add_argument("--max-side", type=int, default=640, help="image A resized to at most this (px)")
    args = ap.parse_args()
    if bool(args.webcam_dir) != bool(args.webcams):
        print("error: --webcam-dir and --webcams go together (the control webcam pairs)", file=sys.stderr)
        return 2
    try:
        pairs = multimodal_eval_pairs(args.multimodal_dir)
        if args.webcam_dir and args.webcams:
            pairs += webcam_eval_pairs(args.webcam_dir, args.webcams)
        groups = {}
        per_pair = []
        for p in pairs:
            ncc = pair_ncc(p.image_a, p.image_b, np.asarray(p.h_ab), args.min_std, args.max_side)
            groups.setdefault(p.group, []).append(ncc)
            if len(ncc):
                per_pair.append((p.group, p.name, len(ncc), np.mean(ncc > 0.3), np.mean(ncc < -0.3), np.median(ncc)))
    except EvalSetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"windows {WINDOW} px (stride {STRIDE}) where both images have a grey-level std >= {args.min_std:g}\n")
    print("| group | pairs | windows | NCC > +0.3 | NCC < -0.3 | median NCC | pairs whose median NCC < 0 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for g, lst in groups.items():
        v = np.concatenate(lst) if lst else np.zeros(0)
        neg = sum(1 for x in lst if len(x) and np.median(x) < 0)
        print(f"| {g} | {len(lst)} | {len(v)} | {np.mean(v > 0.3):.2f} | {np.mean(v < -0.3):.2f} | "
              f"{np.median(v):.2f} | {neg} |")
    print("\n| group | pair | windows | NCC > +0.3 | NCC < -0.3 | median NCC |")
    print("|---|---|---:|---:|---:|---:|")
    for g, name, n, pos, negs, med in per_pair:
        print(f"| {g} | {name} | {n} | {pos:.2f} | {negs:.2f} | {med:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
