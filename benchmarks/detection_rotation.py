"""How far Key.Net's keypoints move when the image turns: for image 1 of each sequence, the
share of its keypoints (1000, multi-scale, sub-pixel) that the detector finds again within
1 / 2 / 3 / 5 px of their true position in the image turned by each angle (rotated about its
centre onto an expanded canvas, as the rotation benchmark does), for the rotation average
over 4 or 8 turns. ``--shift`` adds a half-pixel bilinear shift of the image (no turn): how
much of the motion is the interpolation alone.

    python benchmarks/detection_rotation.py --data-dir ../shared/data/hsequences-mini \\
        ../shared/data/hsequences-extra --angles 30 60 150 --turns 4 8 --shift
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

from HSequences_bench.rotation import read_grey_float, rotate_image
from keynet.base.geometry import warp_points
from keynet.commands.options import ROTATION_TURNS_CHOICES
from keynet.pipeline.extraction import load_detector

RADII = (1, 2, 3, 5)
MARGIN = 20  # px: true positions closer to the turned image's frame are not counted


def found_again(det, image: np.ndarray, moved: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Share of the keypoints of ``image`` with a keypoint of ``moved`` (= ``image`` mapped by
    ``h``) within each of :data:`RADII` px of their true position."""
    a = warp_points(det.detect(image / image.max())[:, :2], h)
    b = det.detect(moved / moved.max())[:, :2]
    hh, ww = moved.shape
    inside = (a[:, 0] > MARGIN) & (a[:, 0] < ww - MARGIN) & (a[:, 1] > MARGIN) & (a[:, 1] < hh - MARGIN)
    d, _ = cKDTree(b).query(a[inside])
    return np.array([np.mean(d <= r) for r in RADII])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", nargs="+", required=True, help="HPatches-layout folder(s): image 1 of each sequence")
    ap.add_argument("--angles", nargs="+", type=float, default=[30.0, 60.0, 150.0])
    ap.add_argument("--turns", nargs="+", type=int, choices=ROTATION_TURNS_CHOICES, default=list(ROTATION_TURNS_CHOICES),
                    help="rotation_average_turns to compare")
    ap.add_argument("--shift", action="store_true", help="also a half-pixel bilinear shift (x and y)")
    ap.add_argument("--num-points", type=int, default=1000)
    args = ap.parse_args(argv)
    images = [p for d in args.data_dir for p in sorted(Path(d).glob("*/1.ppm"))]
    if not images:
        print(f"[ERROR] no <sequence>/1.ppm under {', '.join(args.data_dir)}", file=sys.stderr)
        return 2
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    print(f"{len(images)} images, {args.num_points} keypoints each")
    print("| turns | change | " + " | ".join(f"within {r} px" for r in RADII) + " |")
    print("|---|---|" + "---|" * len(RADII))
    for turns in args.turns:
        det = load_detector("default", num_points=args.num_points, rotation_average=True,
                            rotation_average_turns=turns, subpixel=True)
        changes = [(f"turn {a:g} deg", a) for a in args.angles] + ([("half-pixel shift", None)] if args.shift else [])
        for label, a in changes:
            rows = []
            for p in images:
                im = read_grey_float(p)
                if a is None:
                    moved, h = cv2.warpAffine(im, shift[:2], im.shape[::-1], flags=cv2.INTER_LINEAR), shift
                else:
                    moved, h = rotate_image(im, a)
                rows.append(found_again(det, im, moved, h))
            print(f"| {turns} | {label} | " + " | ".join(f"{v:.3f}" for v in np.mean(rows, 0)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
