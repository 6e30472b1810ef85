#!/usr/bin/env python
"""Descriptor matchers on HSequences-layout sequences: for each matcher, the matches of
every pair (image 1 with images 2..6), how many are correct (reprojection error under the
ground-truth homography < --pixel-threshold px) and the precision. The evidence behind
the default matcher of keynet.pipeline.matching (not the SfM scenes).

    python benchmarks/matchers_hsequences.py --data-dirs ../shared/data/hsequences-mini ../shared/data/hsequences-extra
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from keynet.base.geometry import read_homography  # noqa: E402
from keynet.detection import SkippedLevelsWarning  # noqa: E402
from keynet.commands import options
from keynet.pipeline import matching  # noqa: E402
from keynet.pipeline.matching import MatcherConfig, match_descriptors  # noqa: E402

MATCHERS = [("mnn", None), ("smnn", 0.8), ("smnn", 0.85), ("smnn", 0.9), ("smnn", 0.95), ("snn", 0.8),
            ("snn", 0.9), ("adalam", None)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dirs", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "hsequences-mini"),
                                                      str(ROOT.parent / "shared" / "data" / "hsequences-extra")])
    p.add_argument("--pixel-threshold", type=float, default=3.0)
    options.add_feature_args(p, matching.FeatureConfig(num_points=4000, max_image_size=0))
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", SkippedLevelsWarning)
    ex = matching.build_extractor(options.feature_config_from_args(args))
    seqs = [s for d in args.data_dirs for s in sorted(Path(d).iterdir()) if (s / "1.ppm").is_file()]
    totals = {m: [0, 0] for m in MATCHERS}
    for seq in seqs:
        feats = {k: matching.extract_image(ex, seq / f"{k}.ppm", args.max_image_size)[:2] for k in range(1, 7)}
        shapes = {k: cv2.imread(str(seq / f"{k}.ppm"), cv2.IMREAD_GRAYSCALE).shape for k in range(1, 7)}
        for k in range(2, 7):
            H = read_homography(seq / f"H_1_{k}")
            (k0, d0), (k1, d1) = feats[1], feats[k]
            for m in MATCHERS:
                mm, _ = match_descriptors(d0, d1, MatcherConfig(*m), k0, k1, shapes[1], shapes[k])
                p0 = np.column_stack([k0[mm[:, 0], :2], np.ones(len(mm))]) @ H.T
                err = np.linalg.norm(p0[:, :2] / p0[:, 2:] - k1[mm[:, 1], :2], axis=1)
                totals[m][0] += int((err < args.pixel_threshold).sum())
                totals[m][1] += len(mm)
        print(f"{seq.name} done", flush=True)
    print(f"\n{len(seqs)} sequences, {5 * len(seqs)} pairs, {args.num_points} keypoints per image, "
          f"correct: < {args.pixel_threshold} px\n")
    print("| matcher | threshold | correct matches | all matches | precision |\n|---|---|---|---|---|")
    for (name, th), (ok, n) in totals.items():
        th = MatcherConfig(name, th).resolved_threshold
        print(f"| {name} | {th if th is not None else '-'} | {ok} | {n} | {ok / max(n, 1):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
