"""The options shared by the commands that load weights: one name, one meaning, one help
text (docs/cli.md is the reference). The feature options are generated from the field
metadata of :class:`keynet.pipeline.FeatureConfig` and :class:`keynet.detection.DetectorSettings`
(each declared there once; a command passes its defaults as an instance). Booleans and
``--device`` come from :mod:`keynet.base.cli`.

``--detector`` (official alias ``--checkpoint-det-dir``): Key.Net weights;
``--descriptor`` (official aliases ``--checkpoint-desc-dir``, ``--pytorch-hardnet-dir``):
HardNet weights. The destinations are ``detector`` and ``descriptor``.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Optional, Sequence

from keynet.base.cli import add_bool_flag, add_config_args, config_from_args, count_or_all, positive_int
from keynet.detection import DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS, DetectorSettings
from keynet.pipeline.config import (DESCRIPTOR_FLAGS, DESCRIPTOR_HELP, DETECTOR_FLAGS, DETECTOR_HELP, ORIENTATION_HELP,
                                    FeatureConfig, MatcherConfig, WIDE_BASELINE_MODE)
from keynet.pipeline.matchers import MATCHER_REGISTRY, matchers_help
from keynet.pipeline.pairs import PAIR_MODES

ROTATION_TURNS_CHOICES = (RIGHT_ANGLE_TURNS, 8)


def _field_meta(cls: Any, name: str) -> Dict[str, Any]:
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)


def add_rotation_turns_arg(parser: Any, default: int = DEFAULT_ROTATION_TURNS) -> None:
    """``--rotation-turns`` (dest ``rotation_turns``) on ``parser`` (a parser or a group), as
    declared by ``DetectorSettings.rotation_average_turns``."""
    meta = _field_meta(DetectorSettings, "rotation_average_turns")
    parser.add_argument(*meta["flags"], dest="rotation_turns", type=int, choices=meta["choices"], default=default,
                        help=f"{meta['help']} (default: {default})")


def add_affine_arg(parser: Any, default: str = "none") -> None:
    """``--affine none|learned|moments|PATH`` (dest ``affine``) on ``parser``, as declared by
    ``FeatureConfig.affine``."""
    meta = _field_meta(FeatureConfig, "affine")
    parser.add_argument("--affine", default=default, metavar=meta["metavar"],
                        help=f"{meta['help']} (default: {default})")


def add_weights_args(parser: Any, detector: str = "default", descriptor: str = "default",
                     descriptor_none: bool = False) -> None:
    """``--detector`` and ``--descriptor`` with their official aliases on ``parser`` (a
    parser or an argument group), as declared by ``FeatureConfig``; ``descriptor_none``: the
    command accepts ``--descriptor none`` (keypoints only)."""
    parser.add_argument(*DETECTOR_FLAGS, dest="detector", default=detector, metavar="WEIGHTS", help=DETECTOR_HELP)
    extra = ("; 'none' = keypoints only, no descriptors (so is 'default' when that file is absent)"
             if descriptor_none else "")
    parser.add_argument(*DESCRIPTOR_FLAGS, dest="descriptor", default=descriptor, metavar="WEIGHTS",
                        help=DESCRIPTOR_HELP + extra)


# ----------------------------------------------------------------------------- features and matching
def _optional_float(v: str) -> Optional[float]:
    return None if str(v).lower() in ("", "none", "default") else float(v)


#: The :class:`FeatureConfig` fields with an option in match, reconstruct, demo and the
#: benchmarks (``keynet extract`` has all of them: :data:`EXTRACT_FIELDS`).
FEATURE_FIELDS = ("detector", "descriptor", "num_points", "max_image_size", "nms_size", "subpixel", "rotation_turns",
                  "affine", "device")
EXTRACT_FIELDS = ("detector", "descriptor", "num_points", "pyramid_levels", "upsampled_levels", "scale_factor_levels",
                  "nms_size", "border_size", "multi_scale", "subpixel", "rotation_average", "rotation_turns",
                  "affine", "device")


def add_feature_args(p: argparse.ArgumentParser, defaults: Optional[FeatureConfig] = None,
                     fields: Sequence[str] = FEATURE_FIELDS, group: Optional[Any] = None,
                     descriptor_none: bool = False) -> None:
    """The options of :class:`FeatureConfig`, generated from its field metadata with the
    values of ``defaults`` (the command's defaults) in the group ``group`` (default: a new
    "features" group), and the one pair of options without a field of its own: ``--upright``
    and ``--orientation`` (``FeatureConfig.orientation`` = ``'none'`` when upright).
    ``descriptor_none``: the command accepts ``--descriptor none`` (keypoints only)."""
    d = defaults or FeatureConfig()
    g = group if group is not None else p.add_argument_group("features (Key.Net + HardNet)")
    add_config_args(p, d, group=g, only=[f for f in fields if f != "descriptor"] if descriptor_none else fields)
    if descriptor_none and "descriptor" in fields:
        g.add_argument(*DESCRIPTOR_FLAGS, dest="descriptor", default=d.descriptor, metavar="WEIGHTS",
                       help=DESCRIPTOR_HELP + "; 'none' = keypoints only, no descriptors (so is 'default' when that "
                                              "file is absent)")
    add_bool_flag(g, "--upright", not d.oriented,
                  "upright descriptor patches (the official pipeline). false: estimate each keypoint's orientation "
                  "(--orientation) and cut its patch rotated by it")
    g.add_argument("--orientation", default=d.orientation if d.oriented else "learned", help=ORIENTATION_HELP)


def add_settings(p: argparse.ArgumentParser, defaults: FeatureConfig, fields: Sequence[str],
                 group: Optional[Any] = None) -> None:
    """Some :class:`FeatureConfig` options alone (the benchmarks: ``--num-points``,
    ``--device``, ...), generated from the field metadata with the command's ``defaults``;
    read them back with :func:`keynet.base.cli.config_from_args` or as ``args.<field>``."""
    add_config_args(p, defaults, group=group, only=fields)


def feature_config_from_args(args: argparse.Namespace, defaults: Optional[FeatureConfig] = None) -> FeatureConfig:
    """The :class:`FeatureConfig` of the options of :func:`add_feature_args` (the fields
    without an option keep the value of ``defaults``)."""
    cfg = config_from_args(defaults or FeatureConfig(), args)
    return dataclasses.replace(cfg, orientation="none" if args.upright else args.orientation)


def add_matcher_args(p: argparse.ArgumentParser, defaults: Optional[MatcherConfig] = None,
                     views: bool = False) -> None:
    """Options of :class:`MatcherConfig`; ``views``: also ``--view-synthesis`` and
    ``--min-inliers`` (the commands that match through ``match_images`` / ``match_pairs``:
    match, reconstruct, demo)."""
    d = defaults or MatcherConfig()
    g = p.add_argument_group("matching")
    meta = {f.name: f.metadata for f in dataclasses.fields(MatcherConfig)}
    g.add_argument(*meta["method"]["flags"], dest="matcher", choices=tuple(MATCHER_REGISTRY), default=d.method,
                   help=matchers_help())
    g.add_argument(*meta["threshold"]["flags"], dest="match_threshold", type=_optional_float, default=d.threshold,
                   help=meta["threshold"]["help"])
    if not views:
        return
    g.add_argument(*meta["view_synthesis"]["flags"], dest="view_synthesis", choices=meta["view_synthesis"]["choices"],
                   default=d.view_synthesis, help=meta["view_synthesis"]["help"])
    g.add_argument(*meta["min_inliers"]["flags"], dest="min_inliers", type=positive_int, default=d.min_inliers,
                   help=meta["min_inliers"]["help"])
    add_bool_flag(g, "--wide-baseline", False,
                  f"the wide-baseline mode in one option (--view-synthesis {WIDE_BASELINE_MODE}): the plain "
                  "pipeline's matches, unless their geometry fails and a level of synthesised views passes "
                  "(docs/matching.md, Wide-baseline mode)")


def matcher_config_from_args(args: argparse.Namespace) -> MatcherConfig:
    """The :class:`MatcherConfig` of the options of :func:`add_matcher_args` (``--wide-baseline``
    with another ``--view-synthesis`` than its own: ``ValueError``)."""
    d = MatcherConfig()
    views = getattr(args, "view_synthesis", d.view_synthesis)
    if getattr(args, "wide_baseline", False):
        if views not in (d.view_synthesis, WIDE_BASELINE_MODE):
            raise ValueError(f"--wide-baseline is --view-synthesis {WIDE_BASELINE_MODE}; it cannot be combined with "
                             f"--view-synthesis {views}")
        views = WIDE_BASELINE_MODE
    return MatcherConfig(method=args.matcher, threshold=args.match_threshold, view_synthesis=views,
                         min_inliers=getattr(args, "min_inliers", d.min_inliers))


# ----------------------------------------------------------------------------- collections
def add_collection_args(p: argparse.ArgumentParser, num_neighbours: int) -> None:
    """``--image-dir``, ``--out`` and the pair, feature and matcher options of the commands that
    match a collection (match, reconstruct); ``num_neighbours``: :func:`add_pair_args`'."""
    p.add_argument("--image-dir", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    add_pair_args(p, num_neighbours)
    add_feature_args(p)
    add_matcher_args(p, views=True)


def add_collection_flags(p: argparse.ArgumentParser) -> None:
    """``--strict``, ``--overwrite`` and ``--progress`` of match and reconstruct."""
    add_bool_flag(p, "--strict", False, "stop at the first unreadable image (or one too small for Key.Net) instead "
                                        "of skipping it with a warning")
    add_bool_flag(p, "--overwrite", False, "recompute features and matches that exist")
    add_bool_flag(p, "--progress", True, "progress bars")


# ----------------------------------------------------------------------------- pairs and the benchmark
def add_pair_args(p: argparse.ArgumentParser, num_neighbours: int = 10) -> None:
    """``--pairs``, ``--window``, ``--num-neighbours``, ``--codebook``, ``--pairs-file``
    (match, reconstruct); ``num_neighbours``: the default of ``--num-neighbours`` (the
    commands pass ``keynet.pipeline.retrieval.RetrievalConfig().num_neighbours``)."""
    g = p.add_argument_group("pairs")
    g.add_argument("--pairs", choices=[m for m in PAIR_MODES if m != "file"], default="exhaustive",
                   help="exhaustive: every pair, n(n-1)/2 (small sets, up to a few hundred images); sequential: "
                        "each image with the next --window ones by name (video, ordered walks); retrieval: each "
                        "image with its --num-neighbours most similar images by a VLAD of its own features, "
                        "about n x K pairs (large or unordered collections, distractors)")
    g.add_argument("--window", type=int, default=10, help="images after each one for --pairs sequential")
    g.add_argument("--num-neighbours", type=positive_int, default=num_neighbours,
                   help="images each image is paired with for --pairs retrieval")
    g.add_argument("--codebook", default=None, metavar="NPY",
                   help="VLAD codebook (centroids x descriptor dimension .npy, e.g. OUT/retrieval/codebook.npy of "
                        "another collection) for --pairs retrieval (default: learned from this collection's "
                        "descriptors)")
    g.add_argument("--pairs-file", default=None,
                   help="text file with one 'name0 name1' pair per line (names relative to --image-dir); "
                        "overrides --pairs")


#: ``--top-k-points``: a number of points >= 1, or 'all' / 'none' for all points (0 means
#: nothing anywhere: rejected, as ``--num-points 0``).
top_k = count_or_all("points", "every point")
