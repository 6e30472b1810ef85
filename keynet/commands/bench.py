"""HSequences (HPatches) benchmark: repeatability and matching metrics of the official
Key.Net script (same numbers on the same feature files), plus D2-Net MMA and homography
accuracy. Several detectors can be compared side by side. See docs/benchmark.md."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from HSequences_bench.evaluate import BenchConfig, evaluate_detector, official_results
from HSequences_bench.features import FeatureFileError
from HSequences_bench.hsequences import DEFAULT_PREFIX, DEFAULT_SPLITS, DatasetError, folder_sequences, get_split
from HSequences_bench.report import console_summary, plot_curves, save_pickle, write_tables
from keynet.base.cli import ArgumentParser, add_bool_flag
from keynet.base.geometry import HomographyError

from . import options


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="hpatches-sequences-release/", help="HPatches sequences folder")
    ap.add_argument("--results-bench-dir", default="HSequences_bench/results/", help="where results are written")
    ap.add_argument("--detector-name", nargs="+", default=["KeyNet_default"],
                    help="detector folder name(s) under --results-dir; several are compared side by side")
    ap.add_argument("--results-dir", default="extracted_features/", help="extracted features root")
    ap.add_argument("--split", default="view",
                    help="full, view, illum, view_test, illum_test, debug_view, debug_illum (or any in --split-path); "
                         "all: every sequence found in --data-dir, whatever its name (default: view, the official)")
    ap.add_argument("--split-path", default=str(DEFAULT_SPLITS), help="splits json (ours or the official file)")
    add_bool_flag(ap, "--allow-missing", False,
                  "evaluate the sequences of the split present in --data-dir and report the others")
    ap.add_argument("--top-k-points", type=options.top_k, default=1000,
                    help="best points kept per image; all (or none) = every point; 0 is rejected")
    ap.add_argument("--overlap", type=float, default=0.6, help="minimum circle IoU of a repeated point")
    ap.add_argument("--pixel-threshold", type=float, default=5.0,
                    help="distance (px) of a correct match for the headline matching score")
    add_bool_flag(ap, "--dst-to-src-evaluation", True,
                  "true (the official default): compare in the source frame; false: in the destination frame")
    ap.add_argument("--order-coord", choices=("xysr", "yxsr"), default="xysr", help="column order of .kpt.npy")
    ap.add_argument("--features-prefix", default=DEFAULT_PREFIX,
                    help="folder between <results-dir>/<detector>/ and <sequence>/ in the feature layout")
    ap.add_argument("--descriptor-distance", choices=("l2", "hamming"), default="l2",
                    help="l2 (official); hamming for packed uint8 binary descriptors")
    ap.add_argument("--descriptors", choices=("auto", "yes", "no"), default="auto",
                    help="auto: repeatability only for a detector without any .dsc.npy; yes: required; no: ignore")
    add_bool_flag(ap, "--drop-duplicates", False, "drop repeated (x, y, scale) rows (the official code keeps them)")
    ap.add_argument("--ransac-threshold", type=float, default=3.0, help="RANSAC reprojection threshold (px)")
    add_bool_flag(ap, "--plot", True, "write the MMA / matching-score PNG")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = BenchConfig(top_k=args.top_k_points, overlap=args.overlap, pixel_threshold=args.pixel_threshold,
                      dst_to_src=args.dst_to_src_evaluation, order_coord=args.order_coord,
                      distance=args.descriptor_distance, ransac_threshold=args.ransac_threshold,
                      drop_duplicates=args.drop_duplicates)
    desc = {"auto": None, "yes": True, "no": False}[args.descriptors]
    out_dir = Path(args.results_bench_dir)
    runs = []
    try:
        sequences = get_split(args.split_path, args.split, args.data_dir)
        if args.split != "all" and Path(args.data_dir).is_dir():
            outside = sorted(set(folder_sequences(args.data_dir)) - set(sequences))
            if outside:
                print(f"note: {len(outside)} sequence(s) of {args.data_dir} are not in split '{args.split}' and are "
                      f"not evaluated: {', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''}; "
                      f"--split all evaluates every sequence found there", flush=True)
        for name in args.detector_name:
            print(f"{name}: {args.split}", flush=True)
            t0 = time.time()
            run = evaluate_detector(name, sequences, args.data_dir, args.results_dir, cfg, split=args.split,
                                    allow_missing=args.allow_missing, prefix=args.features_prefix,
                                    descriptors=desc)
            runs.append(run)
            print(console_summary(run, cfg) + f"   ({time.time() - t0:.1f} s)", flush=True)
            pkl = out_dir / f"{name}_{args.split}.pickle"
            save_pickle(official_results(run, cfg), pkl)
    except (FeatureFileError, DatasetError, HomographyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_tables(runs, cfg, out_dir, args.split)
    if args.plot:
        png = out_dir / f"mma_{args.split}.png"
        if plot_curves(runs, cfg, png):
            paths.append(png)
    print("wrote " + ", ".join(str(p) for p in paths) + f" and {len(runs)} pickle(s) in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
