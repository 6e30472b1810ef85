"""Extract classical baselines (OpenCV SIFT, ORB, FAST/Harris/Shi-Tomasi + SIFT) into the
Key.Net feature layout ``<results-dir>/<method>/<image-list line>.{kpt,dsc}.npy`` so
that hsequences_bench.py evaluates them like Key.Net. See docs/benchmark.md."""
from __future__ import annotations

import sys
from pathlib import Path

from HSequences_bench.baselines import METHODS, extract_list
from HSequences_bench.hsequences import DEFAULT_IMAGE_LIST
from keynet.base.cli import ArgumentParser, add_bool_flag, positive_int
from keynet.base.files import DEFAULT_PREFIX, locate_image, read_image_list


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--method", nargs="+", default=["sift"], choices=list(METHODS) + ["all"],
                    help="baseline(s) to extract; 'all' for every one")
    ap.add_argument("--list-images", default=str(DEFAULT_IMAGE_LIST),
                    help="image list, one path per line "
                         "(default: the HPatches list, HSequences_bench/HPatches_images.txt)")
    ap.add_argument("--data-dir", default=None,
                    help=f"dataset folder: replaces the leading '{DEFAULT_PREFIX}/' of list lines "
                         "(default: read the lines as written)")
    ap.add_argument("--results-dir", default="extracted_features/",
                    help="output root: <results-dir>/<method>/<list line>.{kpt,dsc}.npy")
    ap.add_argument("--num-points", type=positive_int, default=1500, help="maximum keypoints per image")
    add_bool_flag(ap, "--skip-missing", False, "skip listed images that do not exist (false: they fail)")
    add_bool_flag(ap, "--overwrite", False, "re-extract existing files")
    add_bool_flag(ap, "--progress", True, "progress bar")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    methods = list(METHODS) if "all" in args.method else args.method
    try:
        lines = read_image_list(args.list_images)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    list_dir = Path(args.list_images).resolve().parent
    failed = 0
    for m in methods:
        summary = extract_list(m, lines, args.results_dir, lambda line: locate_image(line, list_dir, args.data_dir),
                               num_points=args.num_points, overwrite=args.overwrite, skip_missing=args.skip_missing,
                               progress=args.progress)
        print(f"{m}: {summary.line()}")
        for item, reason in summary.failed:
            print(f"  failed: {item}: {reason}", file=sys.stderr)
        failed += len(summary.failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
