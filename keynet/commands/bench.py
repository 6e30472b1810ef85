"""HSequences (HPatches) benchmark: repeatability and matching metrics of the official
Key.Net script (same numbers on the same feature files), plus D2-Net MMA and homography
accuracy. Several detectors can be compared side by side. See docs/benchmark.md.

    keynet extract --image-dir DATA --results-dir FEATURES --network-version NAME
    keynet bench --data-dir DATA --results-dir FEATURES --detector-name NAME --split all

(or ``keynet bench ... --extract``, which runs the extraction itself for missing features)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Sequence

from HSequences_bench.evaluate import BenchConfig, evaluate_detector, official_results
from HSequences_bench.baselines import METHODS, extract_list
from HSequences_bench.features import (
    AUTO_PREFIX,
    FeatureFileError,
    extraction_hint,
    feature_layout,
    missing_keypoint_files,
    sequence_feature_lines,
)
from HSequences_bench.hsequences import (
    DEFAULT_PREFIX,
    DEFAULT_SPLITS,
    DatasetError,
    check_sequences,
    folder_sequences,
    get_split,
)
from HSequences_bench.report import console_summary, plot_curves, save_pickle, write_tables
from keynet.base.cli import ArgumentParser, OutputPathError, add_bool_flag, check_output_dir
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
                         "all: every sequence found in --data-dir, whatever its name (default: view, the official). "
                         "Each sequence: image 1 against each image k.ppm with a homography H_1_k (HPatches: 1-2 .. "
                         "1-6; one's own sequences may have 2 to N images)")
    ap.add_argument("--split-path", default=str(DEFAULT_SPLITS), help="splits json (ours or the official file)")
    add_bool_flag(ap, "--allow-missing", False,
                  "evaluate the sequences of the split complete in --data-dir (1.ppm and at least one k.ppm with "
                  "H_1_k) and report the others")
    ap.add_argument("--top-k-points", type=options.top_k, default=1000,
                    help="best points kept per image; all (or none) = every point; 0 is rejected")
    ap.add_argument("--overlap", type=float, default=0.6, help="minimum circle IoU of a repeated point")
    ap.add_argument("--pixel-threshold", type=float, default=5.0,
                    help="distance (px) of a correct match for the headline matching score")
    add_bool_flag(ap, "--dst-to-src-evaluation", True,
                  "true (the official default): compare in the source frame; false: in the destination frame")
    ap.add_argument("--order-coord", choices=("xysr", "yxsr"), default="xysr", help="column order of .kpt.npy")
    ap.add_argument("--features-prefix", default=AUTO_PREFIX,
                    help=f"folder between <results-dir>/<detector>/ and <sequence>/ in the feature layout; auto "
                         f"(default): {DEFAULT_PREFIX} (the official list's layout) or none (the layout of keynet "
                         f"extract --image-dir DATA-DIR), whichever holds the features; '' = none")
    ap.add_argument("--descriptor-distance", choices=("l2", "hamming"), default="l2",
                    help="l2 (official); hamming for packed uint8 binary descriptors")
    ap.add_argument("--descriptors", choices=("auto", "yes", "no"), default="auto",
                    help="auto: repeatability only for a detector without any .dsc.npy; yes: required; no: ignore")
    add_bool_flag(ap, "--drop-duplicates", False, "drop repeated (x, y, scale) rows (the official code keeps them)")
    ap.add_argument("--ransac-threshold", type=float, default=3.0, help="RANSAC reprojection threshold (px)")
    add_bool_flag(ap, "--plot", True, "write the MMA / matching-score PNG")
    add_bool_flag(ap, "--extract", False,
                  "extract missing features first, with the default settings (keynet extract: Key.Net + HardNet, "
                  "1500 points; a baseline's name, e.g. sift: keynet baselines), into the layout read here")
    return ap


def _missing_features(results_dir: str, detector: str, sequences: Sequence[str], prefix: str, data_dir: str):
    """``(prefix, missing keypoint files)`` of a detector in the layout ``bench`` will read
    (the images of ``sequences`` that are evaluated in ``data_dir``)."""
    prefix = feature_layout(results_dir, detector, sequences, prefix, data_dir)
    return prefix, missing_keypoint_files(results_dir, detector, sequences, prefix, data_dir)


def _missing_message(detector: str, data_dir: str, results_dir: str, prefix: str, missing: List[Path],
                     total: int, auto: bool) -> str:
    """One line: which features are missing and the exact command that creates them."""
    hint = extraction_hint(detector, results_dir, data_dir, prefix)
    root = Path(results_dir) / detector
    if len(missing) == total and auto:
        where = (f"neither {root}/<sequence>/<k>.ppm.kpt.npy nor {root}/{DEFAULT_PREFIX}/<sequence>/<k>.ppm.kpt.npy "
                 f"exists")
    else:
        where = f"{len(missing)} of the {total} keypoint files are missing, the first {missing[0]}"
    return (f"no features of '{detector}' for the sequences of {data_dir}: {where}; create them with: {hint} "
            f"(or add --extract to this keynet bench command)")


def _extract(detector: str, data_dir: str, results_dir: str, sequences: Sequence[str], prefix: str) -> int:
    """Extract the features of ``sequences`` with the default settings into the layout of
    ``prefix``: Key.Net + HardNet (``keynet extract``), or a baseline for its name. Existing
    files are kept (the extraction resumes)."""
    print(f"{detector}: extracting the missing features of {len(sequences)} sequence(s) of {data_dir}", flush=True)
    pre = prefix.strip("/")
    if detector in METHODS:
        lines = sequence_feature_lines(sequences, pre, data_dir)
        where = dict(zip(lines, (Path(data_dir) / line for line in sequence_feature_lines(sequences, "", data_dir))))
        summary = extract_list(detector, lines, results_dir, where.__getitem__)
        print(f"{detector}: {summary.line()}", flush=True)
        for item, reason in summary.failed:
            print(f"  failed: {item}: {reason}", file=sys.stderr)
        return 1 if summary.failed else 0
    with tempfile.TemporaryDirectory(prefix="keynet-bench-") as tmp:
        lst = Path(tmp) / "images.txt"  # <sequence>/<k>.ppm lines, found in --data-dir
        lst.write_text("\n".join(sequence_feature_lines(sequences, "", data_dir)) + "\n")
        version = f"{detector}/{pre}" if pre else detector
        # `keynet extract` in its own process: bench itself stays free of torch, and a command
        # calls no other command's code
        return subprocess.call([sys.executable, "-m", "keynet.cli", "extract", "--list-images", str(lst),
                                "--data-dir", str(data_dir), "--results-dir", str(results_dir),
                                "--network-version", version])


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
        check_output_dir(out_dir, "--results-bench-dir")  # before any work
        sequences = get_split(args.split_path, args.split, args.data_dir)
        if args.split != "all" and Path(args.data_dir).is_dir():
            outside = sorted(set(folder_sequences(args.data_dir)) - set(sequences))
            if outside:
                print(f"note: {len(outside)} sequence(s) of {args.data_dir} are not in split '{args.split}' and are "
                      f"not evaluated: {', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''}; "
                      f"--split all evaluates every sequence found there", flush=True)
        present, _ = check_sequences(args.data_dir, sequences, allow_missing=args.allow_missing)
        for name in args.detector_name:  # every detector's features are there before any is evaluated
            prefix, missing = _missing_features(args.results_dir, name, present, args.features_prefix, args.data_dir)
            if missing and args.extract:
                code = _extract(name, args.data_dir, args.results_dir, present, prefix)
                if code == 2:  # a user error, named on its own line by the extraction
                    return 2
                prefix, missing = _missing_features(args.results_dir, name, present, prefix, args.data_dir)
                if code or missing:
                    print(f"error: the extraction of '{name}' failed for some images (named above)"
                          + (f"; {len(missing)} still without features, the first {missing[0]}" if missing else ""),
                          file=sys.stderr)
                    return 2
            if missing:
                raise FeatureFileError(_missing_message(name, args.data_dir, args.results_dir, prefix, missing,
                                                        len(sequence_feature_lines(present, "", args.data_dir)),
                                                        args.features_prefix == AUTO_PREFIX))
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
    except (FeatureFileError, DatasetError, HomographyError, OutputPathError) as exc:
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
