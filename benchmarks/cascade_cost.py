#!/usr/bin/env python
"""The cost of the wide-baseline cascade, level by level (docs/matching.md, Wide-baseline mode).

For each image pair: the plain pipeline (features of both images + matching, what
``keynet demo`` / ``match_images`` do without views), then the cascade's levels, every level
computed and timed whether the cascade needs it or not (features of both images' views at the
cascade's budgets, the union matching, duplicate merging and the verification with the chance
test), and what the cascade itself costs on the pair (the levels up to the one that answers).
Wall-clock seconds with ``--threads`` torch threads; the networks are loaded before the clock.

    python benchmarks/cascade_cost.py --pairs A1 B1 A2 B2 ... --num-points 8000 --threads 2

Prints one markdown row per pair and the mean.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keynet.pipeline import cascade as C  # noqa: E402
from keynet.pipeline.config import FeatureConfig, MatcherConfig  # noqa: E402
from keynet.pipeline.extraction import build_extractor, image_features  # noqa: E402
from keynet.pipeline.matching import match_plain  # noqa: E402
from keynet.pipeline.nearest import GrowingNeighbours  # noqa: E402
from keynet.pipeline.views import LAST_LEVEL, ViewBudget, ViewedImage  # noqa: E402


def union(image: ViewedImage, level: int):
    """``get(level)`` of the cascade over a :class:`ViewedImage` (upright features)."""
    f, _ = image.features(level)
    return {"kpts": f.keypoints, "desc": f.descriptors, "lafs": f.lafs()[0].numpy(), "ori": None,
            "hw": f.image_size[::-1]}


def level_costs(ex, cfg: FeatureConfig, mcfg: MatcherConfig, a: Path, b: Path, budget: ViewBudget = C.CASCADE_VIEWS):
    """(plain seconds, [seconds of each level: features of both + matching + verification],
    the level the cascade answers with, whether it passed)."""
    t0 = time.perf_counter()
    f0, f1 = image_features(ex, a, cfg.max_image_size), image_features(ex, b, cfg.max_image_size)
    match_plain(f0, f1, mcfg)
    plain = time.perf_counter() - t0
    imgs = [ViewedImage(ex, p, cfg.max_image_size, budget) for p in (a, b)]
    per_level = []
    answer, passed = 0, False
    neighbours = GrowingNeighbours()  # kept across the view levels, as match_cascade does
    for level in range(LAST_LEVEL + 1):
        a, b = (union(im, level) for im in imgs)
        plain_matching = (lambda: match_plain(imgs[0].plain, imgs[1].plain, mcfg)) if level == 0 else None
        _, _, _, check = C.verify_level(a, b, mcfg, level, plain_matching, None if level == 0 else neighbours)
        per_level.append(imgs[0].level_seconds[level] + imgs[1].level_seconds[level] + check.seconds)
        if check.passed and not passed:
            answer, passed = level, True
    return plain, per_level, answer, passed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", required=True, help="image files, two per pair")
    ap.add_argument("--num-points", type=int, default=FeatureConfig.num_points)
    ap.add_argument("--max-image-size", type=int, default=FeatureConfig.max_image_size)
    ap.add_argument("--affine", default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--view-budget", nargs=2, type=float, metavar=("SHARE", "SCALE"),
                    default=(C.CASCADE_VIEWS.share, C.CASCADE_VIEWS.scale),
                    help="another view budget to cost: the share of the plain keypoints a level and the "
                         "image scale of the views (default: the cascade's)")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        print("error: --pairs needs two images per pair", file=sys.stderr)
        return 2
    try:
        budget = ViewBudget(args.view_budget[0], C.CASCADE_VIEWS.upsampled_levels, args.view_budget[1])
    except ValueError as e:
        print(f"error: --view-budget: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = FeatureConfig(num_points=args.num_points, max_image_size=args.max_image_size, affine=args.affine)
    mcfg = MatcherConfig(view_synthesis="cascade")
    ex = build_extractor(cfg)
    print(f"{args.num_points} points, max image size {args.max_image_size}, affine {args.affine}, "
          f"views: {budget.id}, {args.threads} torch threads; seconds (wall)\n")
    print("| pair | plain pipeline | level 0 | level 1 | level 2 | cascade answers | cascade total |")
    print("|---|---:|---:|---:|---:|---|---:|")
    rows = []
    for a, b in zip(args.pairs[::2], args.pairs[1::2]):
        plain, lv, answer, passed = level_costs(ex, cfg, mcfg, Path(a), Path(b), budget)
        used = LAST_LEVEL if not passed else answer
        total = sum(lv[: used + 1])
        rows.append([plain, *lv, total])
        name = f"{Path(a).parent.name}/{Path(a).name} - {Path(b).name}"
        said = f"level {answer}" if passed else "plain (no level passed)"
        print(f"| {name} | {plain:.1f} | " + " | ".join(f"{s:.1f}" for s in lv) + f" | {said} | {total:.1f} |",
              flush=True)
    mean = np.mean(np.array(rows), axis=0)
    print(f"| mean of {len(rows)} | {mean[0]:.1f} | " + " | ".join(f"{s:.1f}" for s in mean[1:-1])
          + f" | | {mean[-1]:.1f} |")
    if len(rows) > 1:
        print(f"\nmedian cascade total: {statistics.median(r[-1] for r in rows):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
