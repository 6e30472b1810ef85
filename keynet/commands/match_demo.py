"""Match two images and draw the matches: Key.Net + HardNet features, a kornia matcher,
a robust two-view fit (fundamental matrix by default, or a homography for planar scenes
and HPatches-like pairs); inliers green, outliers red. ``--view-synthesis auto|full`` also
matches synthesised affine views of both images (extreme viewpoint changes; docs/matching.md).

    keynet demo IMAGE0 IMAGE1 [--out matches.png]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from keynet.base import twoview, viz
from keynet.base.cli import ArgumentParser
from keynet.pipeline import matching

from . import options
from .common import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("image0", help="first image")
    p.add_argument("image1", help="second image")
    p.add_argument("--out", default="matches.png", help="output picture (PNG, JPEG, ...)")
    p.add_argument("--model", choices=("fundamental", "homography"), default="fundamental",
                   help="geometry fitted to tell inliers from outliers")
    p.add_argument("--estimator", choices=sorted(twoview.METHODS), default=twoview.DEFAULT_METHOD,
                   help="robust estimator (OpenCV)")
    p.add_argument("--inlier-threshold", type=float, default=None,
                   help="px at full resolution (default: 1.0 for the epipolar distance, 3.0 for the homography "
                        "transfer error)")
    p.add_argument("--max-lines", type=int, default=1000, help="matches drawn at most (an even subset)")
    p.add_argument("--max-width", type=int, default=2400, help="picture width at most (px)")
    p.add_argument("--keypoints-out", default=None,
                   help="also write the keypoints of both images to this picture (circle radius: 5 x the "
                        "keypoint scale) (default: none)")
    defaults = matching.FeatureConfig(num_points=4000)
    options.add_feature_args(p, defaults)
    options.add_matcher_args(p, views=True)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*pyramid level.*skipped")  # small images: expected
    try:
        for path in (args.image0, args.image1):
            if not Path(path).is_file():
                raise FileNotFoundError(f"image not found: {path}")
        res = matching.match_images(args.image0, args.image1, feature_config=options.feature_config_from_args(args),
                                    matcher=options.matcher_config_from_args(args))
        m = res["matches"]
        xy0, xy1 = res["kpts0"][m[:, 0], :2], res["kpts1"][m[:, 1], :2]
        if args.model == "homography":
            fit = twoview.estimate_homography(xy0, xy1, args.estimator, args.inlier_threshold or 3.0)
        else:
            fit = twoview.estimate_fundamental(xy0, xy1, args.estimator, args.inlier_threshold or 1.0)
        text = (f"{len(res['kpts0'])} / {len(res['kpts1'])} keypoints, {len(m)} matches ({args.matcher}), "
                f"{fit.num_inliers} {args.model} inliers ({args.estimator})")
        if "levels_used" in res:
            text += (f"; view synthesis {args.view_synthesis}: levels 0-{res['levels_used']}, "
                     f"{int(res['inliers'].sum())} verified matches")
        canvas = viz.draw_matches(args.image0, args.image1, res["kpts0"], res["kpts1"], m, fit.inliers,
                                  max_lines=args.max_lines, text=text)
        viz.save_image(args.out, viz.fit_width(canvas, args.max_width))
        if args.keypoints_out:
            pics = [viz.draw_keypoints(im, k, radius_per_scale=5.0) for im, k in
                    ((args.image0, res["kpts0"]), (args.image1, res["kpts1"]))]
            viz.save_image(args.keypoints_out, viz.fit_width(viz.side_by_side(*pics)[0], args.max_width))
    except (*USER_ERRORS, OSError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"wrote {args.out}" + (f" and {args.keypoints_out}" if args.keypoints_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
