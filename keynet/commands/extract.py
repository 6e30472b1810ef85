"""Extract multi-scale Key.Net keypoints and HardNet descriptors for a list of images.

Writes ``<results-dir>/<network-version>/<image path>.kpt.npy`` (N x 4: x, y, scale, score,
best first) and ``.dsc.npy`` (N x 128), like the official script. Run with no arguments to
process the embedded ``test_im/`` with the shipped weights.

At scale: ``torchrun --nproc-per-node N extract_multiscale_features.py ...`` (or any launcher
setting RANK / WORLD_SIZE, on one or many machines): each process takes every N-th image of
the list (one GPU each when there are GPUs), finished outputs are skipped so a re-launch
resumes, and the first process prints one summary of all.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from hardnet import HardNetWeightsError
from keynet.base.cli import ArgumentParser, add_auto_flag, add_bool_flag, add_device_arg, auto_flag
from keynet.base.files import feature_paths
from keynet.base.resources import TEST_IMAGE_LIST as IMAGE_LIST
from keynet.base.runner import Shard, gather_summaries
from keynet.pipeline.extraction import (
    Extractor,
    h5_output_path,
    load_affine,
    load_descriptor,
    load_detector,
    load_orientation,
    run_extraction,
    run_extraction_h5,
)
from keynet.weights import WeightsError

from .options import add_affine_arg, add_rotation_turns_arg, add_weights_args


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--list-images", default=str(IMAGE_LIST),
                   help="Text file with one image path per line (relative paths: to the current "
                        "folder, else to the list's folder).")
    p.add_argument("--data-dir", default=None,
                   help="Image folder for lists written as hpatches-sequences-release/<seq>/<k>.ppm "
                        "(e.g. HSequences_bench/HPatches_images.txt): the leading folder of each line is "
                        "replaced by this one; outputs keep the line as written.")
    p.add_argument("--results-dir", default="extracted_features", help="Output folder.")
    p.add_argument("--network-version", default="KeyNet_default", help="Name of the output sub-folder.")
    add_weights_args(p, descriptor_none=True)
    add_bool_flag(p, "--upright", True,
                  "Upright descriptor patches (the official pipeline). false: estimate each keypoint's "
                  "orientation (--orientation), cut its patch rotated by it and write <image>.ori.npy "
                  "(N float32 degrees, OpenCV's KeyPoint.angle convention); .kpt.npy stays N x 4")
    p.add_argument("--orientation", default="learned",
                   help="Orientation estimator when --upright false: 'learned' (the shipped OriNet, "
                        "pretrained_nets/orinet.pt), 'gradient' (classical dominant gradient, SIFT's rule) "
                        "or an OriNet weights file from keynet train-orientation.")
    add_auto_flag(p, "--rotation-average",
                  "average each pyramid level's score map over turns of the level (--rotation-turns), each "
                  "turned back (Key.Net alone is not rotation-equivariant: on HSequences pairs turned by 180 "
                  "degrees its repeatability falls from 70.8%% to 56.7%%, with the average it stays at 71%%; "
                  "docs/rotation.md). auto: on with --upright false")
    add_rotation_turns_arg(p)
    add_affine_arg(p)
    add_auto_flag(p, "--subpixel",
                  "move each keypoint to the sub-pixel maximum of its level's score map, mapped by pixel centres "
                  "(not the official positions; docs/matching.md, Sub-pixel keypoints). auto: on with --upright "
                  "false, where the points of a turned image fall between the pixels of its pyramid levels")
    add_bool_flag(p, "--extract-MS", True, "Multi-scale extraction (off: single scale, original image only)")
    p.add_argument("--num-points", type=int, default=1500, help="Number of keypoints per image.")
    p.add_argument("--pyramid-levels", "--pyramid_levels", dest="pyramid_levels", type=int, default=5,
                   help="Number of down-sampled pyramid levels.")
    p.add_argument("--upsampled-levels", type=int, default=1, help="Number of up-sampled pyramid levels.")
    p.add_argument("--scale-factor-levels", type=float, default=math.sqrt(2), help="Scale between pyramid levels.")
    p.add_argument("--nms-size", type=int, default=15, help="Non-maximum-suppression window (pixels).")
    p.add_argument("--border-size", type=int, default=15, help="Border (pixels) removed from each score map.")
    p.add_argument("--order-coord", choices=("xysr", "yxsr"), default="xysr", help="Column order of .kpt.npy.")
    p.add_argument("--output-format", choices=("npy", "h5"), default="npy",
                   help="npy: <image>.kpt.npy / .dsc.npy (/ .ori.npy) per image (the official layout); h5: one "
                        "features.h5 per process (features.rank<r>.h5 under torchrun) in hloc's layout, "
                        "groups named by the list lines")
    add_device_arg(p)
    add_bool_flag(p, "--overwrite", False, "Recompute images whose outputs already exist")
    add_bool_flag(p, "--progress", True, "Show a progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shard = Shard.from_env()
    if args.device is None and shard.world > 1 and torch.cuda.is_available():
        args.device = f"cuda:{shard.local_rank % torch.cuda.device_count()}"
    say = print if shard.main else (lambda *a, **k: None)

    try:
        det = load_detector(args.detector, device=args.device, num_points=args.num_points,
                            pyramid_levels=args.pyramid_levels, upsampled_levels=args.upsampled_levels,
                            scale_factor_levels=args.scale_factor_levels, nms_size=args.nms_size,
                            border_size=args.border_size, multi_scale=args.extract_MS,
                            rotation_average=auto_flag(args.rotation_average, not args.upright),
                            rotation_average_turns=args.rotation_turns,
                            subpixel=auto_flag(args.subpixel, not args.upright))
        desc = load_descriptor(args.descriptor, device=args.device)
        ori = None if args.upright else load_orientation(args.orientation, device=args.device)
        aff = load_affine(args.affine, device=args.device)
    except (WeightsError, HardNetWeightsError, ValueError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    if desc is None and shard.main:
        why = ("no HardNet weights at pretrained_nets/hardnet.pt" if args.descriptor == "default"
               else "--descriptor none")
        print(f"[WARNING] descriptors skipped ({why}): only .kpt.npy files are written. "
              "Pass --descriptor (alias --checkpoint-desc-dir) <HardNet weights> for .dsc.npy.", file=sys.stderr)
    procs = f", {shard.world} processes" if shard.world > 1 else ""
    say(f"Extract features for: {args.network_version} (device {det.device}{procs})")
    try:
        if args.output_format == "h5":
            summary = run_extraction_h5(args.list_images, args.results_dir, args.network_version,
                                        Extractor(det, desc, ori, aff), overwrite=args.overwrite,
                                        progress=args.progress and shard.main, data_dir=args.data_dir, shard=shard)
        else:
            summary = run_extraction(args.list_images, args.results_dir, args.network_version,
                                     Extractor(det, desc, ori, aff), overwrite=args.overwrite, order_coord=args.order_coord,
                                     progress=args.progress and shard.main, data_dir=args.data_dir, shard=shard)
    except (FileNotFoundError, ValueError) as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    summary = gather_summaries(summary, shard)
    out = Path(args.results_dir) / args.network_version
    say(f"Done in {summary.seconds:.1f} s: {len(summary.written)} written, {len(summary.skipped)} skipped "
        f"(already there; --overwrite to redo), {len(summary.failed)} failed. Outputs under {out}/")
    if args.output_format == "h5":
        files = [h5_output_path(args.results_dir, args.network_version, shard)] if shard.world <= 1 else \
            [h5_output_path(args.results_dir, args.network_version, Shard(r, shard.world)) for r in range(shard.world)]
        say("  features in " + ", ".join(str(f) for f in files))
    for item in (summary.written[:5] if args.output_format == "npy" else []):
        say(f"  wrote {feature_paths(args.results_dir, args.network_version, item)[0]}"
            + ("" if desc is None else " and .dsc.npy") + ("" if ori is None else " and .ori.npy"))
    if args.output_format == "npy" and len(summary.written) > 5:
        say(f"  ... and {len(summary.written) - 5} more")
    if shard.main:
        for item, err in summary.failed:
            print(f"  FAILED {item}: {err}", file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
