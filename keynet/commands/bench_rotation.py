"""Rotation benchmark: methods compared side by side on HSequences images rotated by a list of
angles (protocol ``pairs``: pair (1, k) with image k rotated; ``single``: an image against
itself rotated). Per angle and method: repeatability, MMA@3/5 px, matching score@3 px, the
orientation error of repeated points and the keypoint count. Writes CSV files, a markdown
table and a plot of MMA@3 versus angle. See docs/rotation.md."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hardnet import HardNetWeightsError
from HSequences_bench.harness.rotation_methods import METHOD_NAMES, MethodError, build_methods, check_methods
from HSequences_bench.hsequences import (
    DEFAULT_SPLITS,
    NUM_IMAGES,
    DatasetError,
    folder_sequences,
    get_split,
    sequence_files,
)
from HSequences_bench.report import to_markdown
from HSequences_bench.rotation import (
    DEFAULT_ANGLES,
    PROTOCOLS,
    AngleError,
    RotationCase,
    default_config,
    evaluate_cases,
    pair_cases,
    parse_angles,
    single_cases,
)
from HSequences_bench.rotation_cache import FeatureStore
from HSequences_bench.rotation_report import wide_table, write_reports
from keynet.base.cli import ArgumentParser, add_auto_flag, add_bool_flag, auto_flag
from keynet.base.geometry import HomographyError
from keynet.base.images import ImageReadError
from keynet.detection import ImageTooSmallError
from keynet.pipeline.config import FeatureConfig
from keynet.weights import WeightsError

from . import options
from .options import add_rotation_turns_arg

#: Errors that are the user's (bad option, missing file): one ``error:`` line, exit code 2.
USER_ERRORS = (AngleError, MethodError, DatasetError, HomographyError, WeightsError, HardNetWeightsError,
               ImageReadError, ImageTooSmallError)


class OptionError(ValueError):
    """An option value that argparse cannot check alone."""


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", nargs="+", default=["hpatches-sequences-release/"],
                    help="one or more HPatches-layout folders (<seq>/1.ppm .. 6.ppm, H_1_k) "
                         "(default: hpatches-sequences-release/)")
    ap.add_argument("--split", default="all",
                    help="sequences: 'all' = every sequence of each --data-dir, or a split of --split-path "
                         "(view, illum, ...) (default: all)")
    ap.add_argument("--split-path", default=str(DEFAULT_SPLITS), help=f"splits json (default: {DEFAULT_SPLITS})")
    ap.add_argument("--sequences", nargs="+", default=None,
                    help="only these sequence names (instead of --split) (default: none)")
    ap.add_argument("--protocol", choices=("pairs", "single", "both"), default="both",
                    help="pairs: pair (1, k) with image k rotated; single: an image against itself rotated "
                         "(default: both)")
    ap.add_argument("--angles", nargs="+", default=None,
                    help="rotation angles in degrees, [0, 360), counter-clockwise: numbers, comma lists or "
                         "start:stop:step ranges (default: pairs "
                         + " ".join(f"{a:g}" for a in DEFAULT_ANGLES["pairs"]) + "; single 0:350:10)")
    ap.add_argument("--single-images", nargs="+", type=int, default=[1],
                    help=f"images (1..{NUM_IMAGES}) of each sequence used by the single protocol (default: 1)")
    ap.add_argument("--methods", nargs="+", default=list(METHOD_NAMES),
                    help="methods, compared in this order: " + ", ".join(METHOD_NAMES)
                         + " (learned: skipped without pretrained_nets/orinet.pt or --orientation-weights; "
                           "kornia-orinet: only with --kornia-orinet-weights) (default: all)")
    options.add_settings(ap, FeatureConfig(num_points=1500), ["num_points"])  # every method
    ap.add_argument("--top-k-points", type=options.top_k, default=1000,
                    help="best points kept in the common region, as the main benchmark; none = all (default: 1000)")
    ap.add_argument("--max-pairs", type=int, default=0,
                    help="pairs protocol: only the first N pairs (1, k) of each sequence; 0 = all 5 (default: 0)")
    ap.add_argument("--orientation-weights", default=None,
                    help="OriNet weights for 'learned' (default: pretrained_nets/orinet.pt when present)")
    ap.add_argument("--kornia-orinet-weights", default=None,
                    help="weights of kornia's OriNet (e.g. the AffNet release's OriNet.pth) for 'kornia-orinet'; "
                         "never downloaded (default: none, the method is skipped)")
    ap.add_argument("--descriptor", default="default",
                    help="HardNet weights of the Key.Net variants ('default': pretrained_nets/hardnet.pt)")
    add_bool_flag(ap, "--rotation-average", True,
                  "the oriented Key.Net variants (learned, gradient, kornia-orinet) detect with score maps averaged "
                  "over turns of each level (--rotation-turns), as 'keynet extract --upright false'; upright is "
                  "always today's pipeline")
    add_rotation_turns_arg(ap)
    options.add_affine_arg(ap)  # the Key.Net variants' regions
    add_auto_flag(ap, "--subpixel",
                  "sub-pixel keypoints (DetectorSettings.subpixel). auto: for the oriented Key.Net variants, as "
                  "'keynet extract --upright false', while upright stays today's pipeline; true: for upright too "
                  "(the like-for-like comparison); false: for none")
    options.add_settings(ap, FeatureConfig(), ["device"])
    ap.add_argument("--out-dir", default="HSequences_bench/results/rotation",
                    help="output folder: CSV, rotation.md, PNG, cache/ (default: HSequences_bench/results/rotation)")
    add_bool_flag(ap, "--cache", True, "keep the features of every (method, image, angle) under <out-dir>/cache "
                                       "and reuse them in later runs")
    add_bool_flag(ap, "--plot", True, "write the PNG of MMA@3 versus angle")
    add_bool_flag(ap, "--progress", True, "progress bars")
    return ap


def find_sequences(data_dirs: Sequence[str], split: str, split_path: str, names: Optional[Sequence[str]]
                   ) -> Tuple[List[Tuple[Path, str]], List[str]]:
    """``(data folder, sequence)`` of every complete sequence requested, and notes on the
    incomplete or absent ones. Raises :class:`DatasetError` when nothing is left."""
    found: List[Tuple[Path, str]] = []
    notes: List[str] = []
    wanted = list(names) if names else (None if split == "all" else get_split(split_path, split))
    seen = set()
    for d in map(Path, data_dirs):
        if not d.is_dir():
            raise DatasetError(f"data directory not found: {d}")
        for s in (folder_sequences(d) if wanted is None else [w for w in wanted if (d / w).is_dir()]):
            lack = [p for p in sequence_files(d, s) if not p.is_file()]
            if lack:
                notes.append(f"skipping {d / s}: incomplete (no {lack[0].name})")
                continue
            found.append((d, s))
            seen.add(s)
    if names:
        absent = [n for n in names if n not in seen]
        if absent:
            raise DatasetError(f"sequence {absent[0]!r} not found in {', '.join(map(str, data_dirs))}")
    elif wanted is not None and len(seen) < len(wanted):
        notes.append(f"{len(wanted) - len(seen)} sequence(s) of split '{split}' are not in the data folder(s)")
    if not found:
        raise DatasetError(f"no complete sequence (<seq>/1.ppm .. {NUM_IMAGES}.ppm and H_1_k) in "
                           f"{', '.join(map(str, data_dirs))}" + (f" for split '{split}'" if wanted else ""))
    return found, notes


def build_cases(args: argparse.Namespace, sequences: Sequence[Tuple[Path, str]]) -> Dict[str, List[RotationCase]]:
    """The cases of each protocol asked for."""
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    given = parse_angles(args.angles) if args.angles else None
    cases: Dict[str, List[RotationCase]] = {}
    for p in protocols:
        angles = given or list(DEFAULT_ANGLES[p])
        if p == "pairs":
            cases[p] = [c for d, s in sequences for c in pair_cases(d, s, angles, args.max_pairs)]
        else:
            cases[p] = [c for d, s in sequences for c in single_cases(d, s, angles, args.single_images)]
    return cases


def check_options(args: argparse.Namespace) -> None:
    if args.num_points < 1:
        raise OptionError(f"--num-points must be >= 1, got {args.num_points}")
    if args.max_pairs < 0:
        raise OptionError(f"--max-pairs must be >= 0, got {args.max_pairs}")
    bad = [i for i in args.single_images if not 1 <= i <= NUM_IMAGES]
    if bad:
        raise OptionError(f"--single-images must be in 1..{NUM_IMAGES}, got {bad[0]}")
    if args.angles:
        parse_angles(args.angles)
    check_methods(args.methods, args.orientation_weights, args.kornia_orinet_weights)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = default_config()
    cfg.top_k = args.top_k_points
    out = Path(args.out_dir)
    try:
        check_options(args)  # cheap checks first: no model is loaded for a bad command line
        sequences, notes = find_sequences(args.data_dir, args.split, args.split_path, args.sequences)
        cases = build_cases(args, sequences)
        methods, skipped = build_methods(args.methods, args.num_points, args.orientation_weights,
                                         args.kornia_orinet_weights, args.device, args.rotation_average,
                                         None if args.descriptor == "default" else args.descriptor,
                                         subpixel=auto_flag(args.subpixel), rotation_turns=args.rotation_turns,
                                         affine=args.affine)
        notes += [f"skipping '{m}': {why}" for m, why in skipped.items()]
        for n in notes:
            print(f"note: {n}", flush=True)
        if not methods:
            raise OptionError("no method left to run")
        print(f"{len(sequences)} sequence(s); " + "; ".join(f"{p}: {len(c)} cases" for p, c in cases.items())
              + f"; methods: {', '.join(m.name for m in methods)}", flush=True)
        store = FeatureStore(out / "cache" if args.cache else None)
        t0 = time.time()
        records = []
        for p, pc in cases.items():
            records += evaluate_cases(pc, methods, store, cfg, progress=args.progress, desc=p)
    except USER_ERRORS + (OptionError,) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary, paths = write_reports(records, out, plot=args.plot)
    for p in cases:
        for column, title in (("mma@3", "MMA@3"), ("ori_err", "mean orientation error (deg)")):
            print(f"\n{p}: {title}\n" + to_markdown(wide_table(summary, p, column),
                                                   ".1f" if column == "ori_err" else ".3f"))
    print(f"{store.extracted} image(s) extracted, the others from the cache ({time.time() - t0:.0f} s); wrote "
          + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
