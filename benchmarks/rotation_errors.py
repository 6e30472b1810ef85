"""Where the matches of the rotation benchmark go wrong: the mutual nearest-neighbour matches
of the `single` protocol (each image 1 against itself turned), by their error under the true
rotation (<= 3 px, 3-5 px, > 5 px), for each method; for Key.Net methods also how many of the
3-5 px matches pair two points of the same pyramid level, and how many have no detection of
the turned image within 1.5 px of the true position (the detection itself moved).
`--edge-ratio R` also counts the NMS maxima of one pyramid level of the first image that pass
SIFT's edge test (ratio of the principal curvatures of the score map below R).

Features come from (and go to) the cache of `keynet bench-rotation` (same methods, same
options, same `--out-dir`), so after a benchmark run nothing is extracted again:

    python benchmarks/rotation_errors.py --data-dir ../shared/data/hsequences-mini \\
        ../shared/data/hsequences-extra --angles 30 60 150 --methods learned sift \\
        --out-dir runs/rotbench_single8
    # the rotation average over the right angles only, with and without sub-pixel points:
    python benchmarks/rotation_errors.py ... --methods learned --rotation-turns 4 \\
        --out-dir runs/rotbench_single3 --edge-ratio 10
    python benchmarks/rotation_errors.py ... --methods learned --rotation-turns 4 --subpixel false
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from HSequences_bench.harness.rotation_methods import MethodError, build_methods
from HSequences_bench.hsequences import DatasetError
from HSequences_bench.rotation import (
    AngleError,
    default_config,
    matched_errors,
    parse_angles,
    selected_points,
    single_cases,
)
from HSequences_bench.rotation_cache import FeatureStore
from keynet.base.cli import add_auto_flag, auto_flag
from keynet.commands.bench_rotation import find_sequences
from keynet.commands.options import add_rotation_turns_arg
from keynet.detection import build_pyramid, nms, remove_border
from keynet.pipeline.extraction import load_detector


def edge_test_counts(image_path: Path, ratio: float, level: int = 1) -> tuple:
    """(maxima, maxima passing SIFT's edge test) on pyramid level ``level`` of the shipped
    Key.Net's score map of ``image_path``: Hessian by central differences, kept when
    ``det > 0`` and ``tr^2 / det < (r + 1)^2 / r``."""
    det = load_detector("default")
    lvl = build_pyramid(det.prepare(str(image_path)), det.settings)[level]
    s = remove_border(det.score_map(lvl.image), det.settings.border_size).astype(np.float64)
    dxx, dyy, dxy = np.zeros_like(s), np.zeros_like(s), np.zeros_like(s)
    dxx[:, 1:-1] = s[:, 2:] - 2 * s[:, 1:-1] + s[:, :-2]
    dyy[1:-1] = s[2:] - 2 * s[1:-1] + s[:-2]
    dxy[1:-1, 1:-1] = (s[2:, 2:] - s[2:, :-2] - s[:-2, 2:] + s[:-2, :-2]) / 4.0
    tr, dt = dxx + dyy, dxx * dyy - dxy ** 2
    keep = (dt > 0) & (tr * tr * ratio < (ratio + 1) ** 2 * dt)
    peaks = nms(s, det.settings.nms_size) > 0
    return int(peaks.sum()), int((peaks & keep).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", nargs="+", required=True)
    ap.add_argument("--angles", nargs="+", default=["30", "60", "150"])
    ap.add_argument("--methods", nargs="+", default=["learned", "sift"])
    ap.add_argument("--out-dir", required=True, help="the bench-rotation output folder whose cache/ is used")
    add_auto_flag(ap, "--subpixel", "as bench-rotation's --subpixel")
    add_rotation_turns_arg(ap)
    ap.add_argument("--edge-ratio", type=float, default=0.0, help="also run the edge-test count (0: no)")
    args = ap.parse_args(argv)
    cfg = default_config()
    try:
        sequences, _ = find_sequences(args.data_dir, "all", "", None)
        angles = parse_angles(args.angles)
        cases = [c for d, s in sequences for c in single_cases(d, s, angles)]
        methods, skipped = build_methods(args.methods, subpixel=auto_flag(args.subpixel),
                                         rotation_turns=args.rotation_turns)
    except (DatasetError, AngleError, MethodError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    if skipped:
        print(f"[ERROR] methods skipped: {skipped}", file=sys.stderr)
        return 2
    store = FeatureStore(Path(args.out_dir) / "cache")
    print(f"{len(cases)} cases (single protocol, angles {', '.join(f'{a:g}' for a in angles)})")
    print("| method | matches | <= 3 px | 3-5 px | > 5 px | 3-5 px: same level | 3-5 px: no detection within 1.5 px |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        err, same, moved = [], [], []
        for case in cases:
            s, d, p_src, p_dst = selected_points(store(m, case.src), store(m, case.dst), case, cfg)
            matches, e = matched_errors(s, d, p_src, p_dst, m.distance)
            mid = (e > 3) & (e <= 5)
            err.append(e)
            same.append(np.isclose(s.keypoints[matches[mid, 0], 2], d.keypoints[matches[mid, 1], 2]))
            if len(p_dst):
                dist, _ = cKDTree(p_dst[:, :2]).query(s.keypoints[matches[mid, 0], :2])
                moved.append(dist > 1.5)
        e = np.concatenate(err)
        mid = (e > 3) & (e <= 5)
        keynet = m.name not in ("sift", "orb")
        lvl = f"{np.concatenate(same).mean():.1%}" if keynet else "n/a"
        mv = f"{np.concatenate(moved).mean():.1%}" if moved else "n/a"
        print(f"| {m.name} | {len(e)} | {(e <= 3).mean():.1%} | {mid.mean():.1%} | {(e > 5).mean():.1%} | "
              f"{lvl} | {mv} |")
    print(f"({store.extracted} image(s) extracted, the others from {Path(args.out_dir) / 'cache'})")
    if args.edge_ratio > 0:
        first = cases[0].src.path
        n, kept = edge_test_counts(first, args.edge_ratio)
        print(f"edge test r={args.edge_ratio:g} on level 1 of {first}: {kept} of {n} maxima kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
