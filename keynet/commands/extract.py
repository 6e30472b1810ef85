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
import dataclasses
import sys
from pathlib import Path

import torch

from hardnet import HardNetWeightsError
from keynet.base.cli import ArgumentParser, OutputPathError, add_bool_flag, check_output_dir, interruptible
from keynet.base.files import feature_paths
from keynet.base.resources import TEST_IMAGE_LIST as IMAGE_LIST
from keynet.base.runner import Shard, gather_summaries
from keynet.pipeline.config import EXTRACT_DEFAULTS
from keynet.pipeline.extraction import extractor_from_config
from keynet.pipeline.stages import h5_output_path, merge_rank_files, run_extraction, run_extraction_h5
from keynet.weights import WeightsError

from . import options


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--list-images", default=None,
                     help="Text file with one image path per line (relative paths: to the current folder, else to "
                          "the list's folder); outputs are named by the line as written, an absolute one below "
                          "<results-dir>/<network-version>/ without its leading '/' (--image-dir names them relative "
                          f"to a folder). Default (neither this nor --image-dir): {IMAGE_LIST}")
    src.add_argument("--image-dir", default=None,
                     help="A folder of images instead of a list: every image below it (recursive; "
                          ".jpg/.jpeg/.png/.ppm/.bmp, the rule of match and reconstruct), each named by its path "
                          "relative to the folder (outputs <results-dir>/<network-version>/<that path>.kpt.npy, or "
                          "the HDF5 group of that name)")
    p.add_argument("--data-dir", default=None,
                   help="Image folder for lists written as hpatches-sequences-release/<seq>/<k>.ppm "
                        "(e.g. HSequences_bench/HPatches_images.txt): the leading folder of each line is "
                        "replaced by this one; outputs keep the line as written.")
    p.add_argument("--results-dir", default="extracted_features", help="Output folder.")
    p.add_argument("--network-version", default="KeyNet_default", help="Name of the output sub-folder.")
    g = p.add_argument_group("features (Key.Net + HardNet; defaults: the official script's)")
    options.add_feature_args(p, EXTRACT_DEFAULTS, options.EXTRACT_FIELDS, group=g, descriptor_none=True)
    p.add_argument("--order-coord", choices=("xysr", "yxsr"), default="xysr", help="Column order of .kpt.npy.")
    p.add_argument("--output-format", choices=("npy", "h5"), default="npy",
                   help="npy: <image>.kpt.npy / .dsc.npy (/ .ori.npy, .aff.npy) per image (the official layout; "
                        "--upright false adds <image>.ori.npy, N float32 degrees in OpenCV's KeyPoint.angle "
                        "convention; .kpt.npy stays N x 4); h5: one features.h5 in hloc's layout, groups named by the "
                        "list lines or the paths under --image-dir (under torchrun each process writes "
                        "features.rank<r>.h5, merged into features.h5 at the end)")
    add_bool_flag(p, "--overwrite", False, "Recompute images whose outputs already exist")
    add_bool_flag(p, "--progress", True, "Show a progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@interruptible("the features written so far under --results-dir are kept (a re-run skips them)")
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_output_dir(Path(args.results_dir) / args.network_version, "--results-dir")  # before any work
    except OutputPathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shard = Shard.from_env()
    say = print if shard.main else (lambda *a, **k: None)

    cfg = options.feature_config_from_args(args, EXTRACT_DEFAULTS)
    if cfg.device is None and shard.world > 1 and torch.cuda.is_available():
        cfg = dataclasses.replace(cfg, device=f"cuda:{shard.local_rank % torch.cuda.device_count()}")
    try:
        ex = extractor_from_config(cfg)
    except (WeightsError, HardNetWeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    det, desc, ori = ex.detector, ex.descriptor, ex.orientation
    if desc is None and shard.main:
        why = ("no HardNet weights at pretrained_nets/hardnet.pt" if args.descriptor == "default"
               else "--descriptor none")
        print(f"[WARNING] descriptors skipped ({why}): only .kpt.npy files are written. "
              "Pass --descriptor (alias --checkpoint-desc-dir) <HardNet weights> for .dsc.npy.", file=sys.stderr)
    procs = f", {shard.world} processes" if shard.world > 1 else ""
    say(f"Extract features for: {args.network_version} (device {det.device}{procs})")
    list_images = args.list_images if args.list_images or args.image_dir else str(IMAGE_LIST)
    try:
        if args.output_format == "h5":
            summary = run_extraction_h5(list_images, args.results_dir, args.network_version, ex,
                                        overwrite=args.overwrite, progress=args.progress and shard.main,
                                        data_dir=args.data_dir, shard=shard, config=cfg, image_dir=args.image_dir)
        else:
            summary = run_extraction(list_images, args.results_dir, args.network_version, ex,
                                     overwrite=args.overwrite, order_coord=args.order_coord,
                                     progress=args.progress and shard.main, data_dir=args.data_dir, shard=shard,
                                     image_dir=args.image_dir)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = gather_summaries(summary, shard)
    out = Path(args.results_dir) / args.network_version
    say(f"Done in {summary.seconds:.1f} s: {len(summary.written)} written, {len(summary.skipped)} skipped "
        f"(already there; --overwrite to redo), {len(summary.failed)} failed"
        + (" (each named above)" if summary.failed else "") + f". Outputs under {out}/")
    if args.output_format == "h5":
        if shard.world > 1 and shard.main:  # every process is done (gather_summaries): one file for match / reconstruct
            try:
                path = merge_rank_files(args.results_dir, args.network_version, shard.world)
            except (OSError, ValueError) as e:
                print(f"error: merging the per-process files: {e}", file=sys.stderr)
                return 2
        else:
            path = h5_output_path(args.results_dir, args.network_version)
        say(f"  features in {path}")
    for item in (summary.written[:5] if args.output_format == "npy" else []):
        say(f"  wrote {feature_paths(args.results_dir, args.network_version, item)[0]}"
            + ("" if desc is None else " and .dsc.npy") + ("" if ori is None else " and .ori.npy"))
    if args.output_format == "npy" and len(summary.written) > 5:
        say(f"  ... and {len(summary.written) - 5} more")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
