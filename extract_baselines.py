"""Extract classical baselines (OpenCV SIFT, ORB, FAST/Harris/Shi-Tomasi + SIFT) into the
Key.Net feature layout ``<results-dir>/<method>/<image-list line>.{kpt,dsc}.npy`` so
that hsequences_bench.py evaluates them like Key.Net. See docs/benchmark.md."""
from __future__ import annotations

import argparse
import sys

from keynet.benchmark.baselines import METHODS, extract_list
from keynet.benchmark.hsequences import DEFAULT_IMAGE_LIST, DEFAULT_PREFIX, resolve_image_path
from kpcore.files import read_image_list


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", nargs="+", default=["sift"], choices=list(METHODS) + ["all"],
                    help="baseline(s) to extract; 'all' for every one")
    ap.add_argument("--list-images", default=str(DEFAULT_IMAGE_LIST),
                    help="image list, one path per line (default: the HPatches list)")
    ap.add_argument("--data-dir", default=None,
                    help=f"dataset folder: replaces the leading '{DEFAULT_PREFIX}/' of list lines "
                         "(default: read the lines as written)")
    ap.add_argument("--results-dir", default="extracted_features/")
    ap.add_argument("--num-points", type=int, default=1500, help="maximum keypoints per image")
    ap.add_argument("--skip-missing", action="store_true", help="skip listed images that do not exist")
    ap.add_argument("--overwrite", action="store_true", help="re-extract existing files")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    methods = list(METHODS) if "all" in args.method else args.method
    lines = read_image_list(args.list_images)
    for m in methods:
        counts = extract_list(m, lines, args.results_dir, lambda l: resolve_image_path(l, args.data_dir),
                              num_points=args.num_points, overwrite=args.overwrite, skip_missing=args.skip_missing,
                              log=None if args.quiet else print)
        print(f"{m}: {counts['written']} written, {counts['existing']} already there, "
              f"{counts['missing']} images missing (skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
