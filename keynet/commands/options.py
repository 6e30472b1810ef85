"""The options shared by the commands that load weights: one name, one meaning, one help
text (docs/cli.md is the reference). Booleans and ``--device`` come from :mod:`keynet.base.cli`.

``--detector`` (official alias ``--checkpoint-det-dir``): Key.Net weights;
``--descriptor`` (official aliases ``--checkpoint-desc-dir``, ``--pytorch-hardnet-dir``):
HardNet weights. The destinations are ``detector`` and ``descriptor``.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from keynet.base.cli import add_bool_flag, add_device_arg
from keynet.detection import DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS
from keynet.pipeline.matching import MATCHERS, FeatureConfig, MatcherConfig
from keynet.pipeline.pairs import PAIR_MODES
from keynet.pipeline.views import VIEW_SYNTHESIS_MODES

#: Option strings, the canonical first (the others: the official script's names).
DETECTOR_FLAGS = ("--detector", "--checkpoint-det-dir")
DESCRIPTOR_FLAGS = ("--descriptor", "--checkpoint-desc-dir", "--pytorch-hardnet-dir")

DETECTOR_HELP = ("Key.Net weights: a file in any supported format (project .pt, official TF .npz, the authors' "
                 ".pth, the reproduction's .pt), a folder holding one, 'default' (pretrained_nets/keynet.pt) or "
                 "'tiny' (the shipped Tiny-Key.Net, pretrained_nets/tiny_keynet.pt)")
DESCRIPTOR_HELP = ("HardNet weights (project format or the official HardNet++.pth layout) or 'default' "
                   "(pretrained_nets/hardnet.pt)")


#: The rotation average of oriented extraction (``--upright false``): how many evenly spaced
#: turns of each pyramid level (``DetectorSettings.rotation_average_turns``).
ROTATION_TURNS_CHOICES = (RIGHT_ANGLE_TURNS, 8)
ROTATION_TURNS_HELP = ("turns of each pyramid level the rotation average uses: 4 = the right angles (4x the "
                       "detector time), 8 = also the 45-degree ones (about 3x the time of 4; detection much closer "
                       "to invariant between the right angles; docs/rotation.md)")


def add_rotation_turns_arg(parser: Any, default: int = DEFAULT_ROTATION_TURNS) -> None:
    """``--rotation-turns`` (dest ``rotation_turns``) on ``parser`` (a parser or a group)."""
    parser.add_argument("--rotation-turns", type=int, choices=ROTATION_TURNS_CHOICES, default=default,
                        help=f"{ROTATION_TURNS_HELP} (default: {default})")


AFFINE_HELP = ("affine shape of each keypoint's region, estimated before the orientation and the descriptor "
               "(wide baselines, strong tilts): 'none' (isotropic regions, the official pipeline), 'learned' "
               "(the shipped AffNet, pretrained_nets/affnet.pt), 'moments' (the second-moment / Baumberg "
               "iteration, kornia's estimator) or an AffNet weights file (docs/wide_baseline.md)")


def add_affine_arg(parser: Any, default: str = "none") -> None:
    """``--affine none|learned|moments|PATH`` (dest ``affine``) on ``parser``."""
    parser.add_argument("--affine", default=default, metavar="none|learned|moments|PATH",
                        help=f"{AFFINE_HELP} (default: {default})")


def add_weights_args(parser: Any, detector: str = "default", descriptor: str = "default",
                     descriptor_none: bool = False) -> None:
    """``--detector`` and ``--descriptor`` with their official aliases on ``parser`` (a
    parser or an argument group); ``descriptor_none``: the command accepts ``--descriptor
    none`` (keypoints only)."""
    parser.add_argument(*DETECTOR_FLAGS, dest="detector", default=detector, metavar="WEIGHTS", help=DETECTOR_HELP)
    extra = ("; 'none' = keypoints only, no descriptors (so is 'default' when that file is absent)"
             if descriptor_none else "")
    parser.add_argument(*DESCRIPTOR_FLAGS, dest="descriptor", default=descriptor, metavar="WEIGHTS",
                        help=DESCRIPTOR_HELP + extra)


# ----------------------------------------------------------------------------- features and matching
def _optional_float(v: str) -> Optional[float]:
    return None if str(v).lower() in ("", "none", "default") else float(v)


def add_feature_args(p: argparse.ArgumentParser, defaults: Optional[FeatureConfig] = None) -> None:
    """Options of :class:`FeatureConfig` (shared by the matching / reconstruction scripts)."""
    d = defaults or FeatureConfig()
    g = p.add_argument_group("features (Key.Net + HardNet)")
    add_weights_args(g, d.detector, d.descriptor)
    g.add_argument("--num-points", type=int, default=d.num_points, help="keypoints per image")
    g.add_argument("--max-image-size", type=int, default=d.max_image_size,
                   help="longest side (px) features are computed at; larger images are downscaled and the "
                        "keypoints mapped back to full resolution; 0 = full resolution")
    g.add_argument("--nms-size", type=int, default=d.nms_size, help="non-maximum-suppression window (px)")
    add_bool_flag(g, "--subpixel", d.subpixel,
                  "sub-pixel score maxima and exact pyramid-level mapping (false: the official extraction)")
    add_bool_flag(g, "--upright", d.orientation == "none",
                  "upright descriptor patches (false: rotated by each keypoint's --orientation)")
    g.add_argument("--orientation", default=d.orientation if d.orientation != "none" else "learned",
                   help="orientation estimator when --upright false: 'learned' (shipped OriNet), 'gradient' "
                        "(dominant gradient) or an OriNet weights file")
    add_rotation_turns_arg(g, d.rotation_turns)
    add_affine_arg(g, d.affine)
    add_device_arg(g, d.device or "auto")


def feature_config_from_args(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(detector=args.detector, descriptor=args.descriptor, num_points=args.num_points,
                         max_image_size=args.max_image_size, nms_size=args.nms_size, subpixel=args.subpixel,
                         orientation="none" if args.upright else args.orientation,
                         rotation_turns=args.rotation_turns, affine=args.affine, device=args.device)


def add_matcher_args(p: argparse.ArgumentParser, defaults: Optional[MatcherConfig] = None,
                     views: bool = False) -> None:
    """Options of :class:`MatcherConfig`; ``views``: also ``--view-synthesis`` and
    ``--min-inliers`` (the commands that match through ``match_images`` / ``match_pairs``:
    match, reconstruct, demo)."""
    d = defaults or MatcherConfig()
    g = p.add_argument_group("matching")
    g.add_argument("--matcher", choices=MATCHERS, default=d.method,
                   help="smnn: mutual NN + ratio test; snn: ratio test; mnn: mutual NN; nn: nearest neighbour; "
                        "adalam: AdaLAM")
    g.add_argument("--match-threshold", type=_optional_float, default=d.threshold,
                   help="ratio (smnn 0.9, snn 0.8), max. distance (mnn, nn: none) or AdaLAM min. confidence "
                        "(200); default: the matcher's")
    if not views:
        return
    g.add_argument("--view-synthesis", choices=VIEW_SYNTHESIS_MODES, default=d.view_synthesis,
                   help="also match synthesised affine views of both images, for extreme viewpoint changes "
                        "(ASIFT / MODS; docs/matching.md): none (the plain images), auto (the plain images first, "
                        "then views of tilt 2, then 4, while fewer than --min-inliers matches pass the "
                        "fundamental-matrix check), full (all views at once)")
    g.add_argument("--min-inliers", type=_positive_int, default=d.min_inliers,
                   help="verified matches at which --view-synthesis auto stops adding views (MODS's 15)")


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def matcher_config_from_args(args: argparse.Namespace) -> MatcherConfig:
    d = MatcherConfig()
    return MatcherConfig(method=args.matcher, threshold=args.match_threshold,
                         view_synthesis=getattr(args, "view_synthesis", d.view_synthesis),
                         min_inliers=getattr(args, "min_inliers", d.min_inliers))


# ----------------------------------------------------------------------------- pairs and the benchmark
def add_pair_args(p: argparse.ArgumentParser) -> None:
    """``--pairs``, ``--window``, ``--pairs-file`` (match, reconstruct)."""
    g = p.add_argument_group("pairs")
    g.add_argument("--pairs", choices=[m for m in PAIR_MODES if m != "file"], default="exhaustive",
                   help="exhaustive: every pair; sequential: each image with the next --window ones (by name)")
    g.add_argument("--window", type=int, default=10, help="images after each one for --pairs sequential")
    g.add_argument("--pairs-file", default=None,
                   help="text file with one 'name0 name1' pair per line (names relative to --image-dir); "
                        "overrides --pairs")


def top_k(v: str) -> Optional[int]:
    """Integer number of points, or 'none'/'all'/0 for all points."""
    if str(v).strip().lower() in ("none", "all", "0"):
        return None
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError("--top-k-points must be >= 0 or 'none'")
    return n
