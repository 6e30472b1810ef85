"""Match two images and draw the matches: Key.Net + HardNet features, a kornia matcher,
a robust two-view fit (fundamental matrix by default, or a homography for planar scenes
and HPatches-like pairs); inliers green, outliers red. ``--view-synthesis auto|full`` also
matches synthesised affine views of both images (extreme viewpoint changes; docs/matching.md).

    keynet demo IMAGE0 IMAGE1 [--out matches.png]

The picture's banner (also printed) says what each number is: the tentative matches of the
matcher, how many of them the fitted geometry keeps (inliers, green; outliers red), the
keypoints of each image, and how many of the matches are drawn (``--max-lines``; ``all``
draws every one). One status line per stage goes to stderr (``--no-progress``: none).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from keynet.base import twoview, viz
from keynet.pipeline.cascade import describe_checks
from keynet.base.cli import ArgumentParser, add_bool_flag, check_output_file, count_or_all
from keynet.detection import SkippedLevelsWarning
from keynet.pipeline import matching

from . import options
from .common import USER_ERRORS

#: Match lines drawn by default: a few hundred lines still show where the matches are and
#: which are outliers; thousands cover the pictures and hide one another.
DEFAULT_MAX_LINES = 200


#: ``--max-lines``: a number of lines >= 1, or ``all`` (every match; ``None``).
max_lines_arg = count_or_all("lines", "every match")


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
    p.add_argument("--max-lines", type=max_lines_arg, default=DEFAULT_MAX_LINES,
                   help=f"match lines drawn at most, an even subset of inliers and outliers (default: "
                        f"{DEFAULT_MAX_LINES}: more lines cover the pictures and hide one another); all = every "
                        f"match; the banner says how many are drawn")
    p.add_argument("--max-width", type=int, default=2400, help="picture width at most (px)")
    p.add_argument("--keypoints-out", default=None,
                   help="also write the keypoints of both images to this picture (circle radius: 5 x the "
                        "keypoint scale) (default: none)")
    options.add_feature_args(p, matching.FeatureConfig())
    options.add_matcher_args(p, views=True)
    add_bool_flag(p, "--progress", True, "one status line per stage (networks, features and matching, fit, "
                                         "drawing) on stderr")
    return p


class _Stages:
    """One status line per stage on stderr when it starts, ``[k/n] what ...``; silent when
    ``enabled`` is false. ``t0``: the start (the summary prints the total time)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.done, self.t0 = enabled, total, 0, time.time()

    def __call__(self, what: str) -> None:
        self.done += 1
        if self.enabled:
            print(f"[{self.done}/{self.total}] {what} ...", file=sys.stderr, flush=True)


def describe(num_kpts0: int, num_kpts1: int, num_matches: int, num_inliers: int, matcher: str, model: str,
             estimator: str, max_lines: Optional[int], views: Optional[str] = None) -> List[str]:
    """The lines of the banner (and of the printed summary): what every number is."""
    drawn = num_matches if max_lines is None else min(max_lines, num_matches)
    lines = [(f"{num_matches} tentative matches ({matcher}), {num_inliers} {model} inliers ({estimator}; "
              f"inliers green, outliers red)"),
             f"keypoints: {num_kpts0} left, {num_kpts1} right; "
             + (f"all {num_matches} matches drawn" if drawn == num_matches else
                f"{drawn} of the {num_matches} matches drawn (--max-lines all draws every one)")]
    if views:
        lines.append(views)
    return lines


def weak_fit_line(q: twoview.FitQuality) -> str:
    """One line saying why a fit is weak and what to try (``""`` when it is not weak; the rule:
    :func:`keynet.base.twoview.fit_quality`)."""
    if not q.weak:
        return ""
    return f"weak fit: {', '.join(q.problems)}; {twoview.weak_fit_hint(q)}"


def add_banner(canvas: np.ndarray, lines: List[str]) -> np.ndarray:
    """``lines`` of black text on a white banner above ``canvas``, scaled so that each fits."""
    font, width = cv2.FONT_HERSHEY_SIMPLEX, canvas.shape[1]
    scale = max(0.5, width / 2000.0)
    widest = max(cv2.getTextSize(t, font, 1.0, 2)[0][0] for t in lines)
    scale = max(0.3, min(scale, (width - 16) / max(widest, 1)))
    thick = max(1, int(2 * scale))
    (_, th), base = cv2.getTextSize("Ag", font, scale, thick)
    step = th + base + 6
    banner = np.full((step * len(lines) + 8, width, 3), 255, np.uint8)
    for i, t in enumerate(lines):
        cv2.putText(banner, t, (8, 4 + th + i * step + 2), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return np.vstack([banner, canvas])


def check_outputs(args: argparse.Namespace) -> None:
    """``--out`` and ``--keypoints-out`` can be written as pictures, else one ``OSError`` naming
    the option (checked before any work)."""
    for option, path in (("--out", args.out), ("--keypoints-out", args.keypoints_out)):
        if path:
            check_output_file(path, option)
            if not cv2.haveImageWriter(str(path)):
                raise OSError(f"{option} {path}: no picture format for this extension (use .png or .jpg)")


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore", SkippedLevelsWarning)  # small images: expected
    stage = _Stages(args.progress, 4)
    try:
        check_outputs(args)  # before any work
        for path in (args.image0, args.image1):
            if Path(path).is_dir():
                raise IsADirectoryError(f"{path} is a folder, not an image file")
            if not Path(path).is_file():
                raise FileNotFoundError(f"image not found: {path}")
        fcfg = options.feature_config_from_args(args)
        mcfg = options.matcher_config_from_args(args)
        stage("loading the networks (Key.Net + HardNet)")
        ex = matching.build_extractor(fcfg)
        views = "" if mcfg.view_synthesis == "none" else f" and of their synthesised views ({mcfg.view_synthesis})"
        stage(f"features of both images{views} (up to {fcfg.num_points} points each), matching ({args.matcher})")
        res = matching.match_images(args.image0, args.image1, extractor=ex, feature_config=fcfg, matcher=mcfg)
        m = res["matches"]
        xy0, xy1 = res["kpts0"][m[:, 0], :2], res["kpts1"][m[:, 1], :2]
        geometry = "a fundamental matrix" if args.model == "fundamental" else "a homography"
        stage(f"fitting {geometry} ({args.estimator}) to {len(m)} matches")
        threshold = args.inlier_threshold or (3.0 if args.model == "homography" else 1.0)
        if args.model == "homography":
            fit = twoview.estimate_homography(xy0, xy1, args.estimator, threshold)
        else:
            fit = twoview.estimate_fundamental(xy0, xy1, args.estimator, threshold)
        weak = weak_fit_line(twoview.fit_quality(xy0, xy1, fit, res["size0"], res["size1"], args.model, threshold))
        synth = None
        if "checks" in res:  # the cascade: which level answered and why
            synth = f"wide-baseline cascade: {describe_checks(res['checks'])}"
        elif "levels_used" in res:
            synth = (f"view synthesis {mcfg.view_synthesis}: levels 0-{res['levels_used']}, "
                     f"{int(res['inliers'].sum())} verified matches")
        lines = describe(len(res["kpts0"]), len(res["kpts1"]), len(m), fit.num_inliers, args.matcher, args.model,
                         args.estimator, args.max_lines, synth)
        stage(f"drawing {args.out}" + (f" and {args.keypoints_out}" if args.keypoints_out else ""))
        canvas = viz.draw_matches(args.image0, args.image1, res["kpts0"], res["kpts1"], m, fit.inliers,
                                  max_lines=args.max_lines)
        viz.save_image(args.out, viz.fit_width(add_banner(canvas, lines + ([weak] if weak else [])), args.max_width))
        if args.keypoints_out:
            pics = [viz.draw_keypoints(im, k, radius_per_scale=5.0) for im, k in
                    ((args.image0, res["kpts0"]), (args.image1, res["kpts1"]))]
            viz.save_image(args.keypoints_out, viz.fit_width(viz.side_by_side(*pics)[0], args.max_width))
    except (*USER_ERRORS, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if weak:
        print(f"warning: {weak}", file=sys.stderr)
    print(f"wrote {args.out}" + (f" and {args.keypoints_out}" if args.keypoints_out else "")
          + f" ({time.time() - stage.t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
