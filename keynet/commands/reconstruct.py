"""Structure-from-Motion of an image folder with COLMAP (pycolmap): Key.Net + HardNet
features, kornia matching, COLMAP geometric verification and mapping (incremental, global
or hierarchical).

    keynet reconstruct --image-dir DIR --out OUT
    keynet reconstruct --image-dir DIR --out OUT --camera-model PINHOLE \\
        --camera-params fx,fy,cx,cy --no-refine-intrinsics
    keynet reconstruct --image-dir DIR --out OUT --pairs retrieval --num-neighbours 10 --mapper global

Writes under --out: features.h5, matches.h5 (hloc layout), pairs.txt, database.db (COLMAP),
with --pairs retrieval retrieval/ (codebook.npy, global.npy, pairs.txt: reused by a re-run)
and sparse/<k>/ (cameras.bin, images.bin, points3D.bin, points3D.ply; sparse/0 is the
largest model), and prints a summary. Re-running reuses the features and matches already
computed with the same settings. Exit codes: 0 done, 1 the scene did not reconstruct,
2 bad input (empty folder, unreadable image, bad pairs file, bad option or weights).
"""
from __future__ import annotations

import argparse
import sys
import warnings


from keynet.base.cli import ArgumentParser, add_bool_flag, check_output_dir, positive_int
from keynet.detection import SkippedLevelsWarning
from keynet.pipeline import reconstruction
from keynet.pipeline.reconstruction import CAMERA_MODE_CHOICES, MAPPERS, CameraConfig, ReconstructionConfig
from keynet.pipeline.retrieval import RetrievalConfig

from . import options
from .common import USER_ERRORS


def camera_params(v: str):
    try:
        return tuple(float(x) for x in v.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {v!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    options.add_collection_args(p, RetrievalConfig().num_neighbours)
    d = ReconstructionConfig()
    g = p.add_argument_group("cameras")
    g.add_argument("--camera-mode", choices=CAMERA_MODE_CHOICES, default=d.camera.mode,
                   help="grouped: one camera per image size and EXIF camera (photos of one size without EXIF are "
                        "taken as one camera); auto: COLMAP's default (one camera per image unless EXIF names "
                        "the camera); single: one camera shared by all images; per-image; per-folder. The summary "
                        "says what was assumed")
    g.add_argument("--camera-model", default=None,
                   help=f"COLMAP camera model, e.g. PINHOLE, SIMPLE_RADIAL, OPENCV (default: COLMAP's "
                        f"SIMPLE_RADIAL); one of {', '.join(reconstruction.CAMERA_MODELS)}")
    g.add_argument("--camera-params", type=camera_params, default=None,
                   help="the model's parameters, comma-separated in COLMAP's order and pixel convention, "
                        "full-resolution pixels (PINHOLE: fx,fy,cx,cy) (default: from image size and EXIF)")
    add_bool_flag(g, "--refine-intrinsics", d.camera.refine_intrinsics,
                  "let bundle adjustment refine focal length and distortion")
    g = p.add_argument_group("COLMAP")
    g.add_argument("--mapper", choices=MAPPERS, default=d.mapper,
                   help="incremental: COLMAP's incremental mapper (the most robust; time grows fast with the "
                        "images); global: GLOMAP's global SfM (rotation averaging and global positioning, then one "
                        "bundle adjustment; much faster on large collections); hierarchical: the scene split into "
                        "overlapping clusters mapped incrementally, then merged (large scenes)")
    g.add_argument("--min-num-matches", type=int, default=d.min_num_matches,
                   help="minimum verified matches for a pair to be used")
    g.add_argument("--min-model-size", type=positive_int, default=d.min_model_size, metavar="N",
                   help="fewest registered images of a model kept besides the first (default: COLMAP's, 10 for the "
                        "incremental and hierarchical mappers, 3 for the global one); lower it for a collection of "
                        "several small scenes")
    g.add_argument("--num-threads", type=int, default=d.num_threads, help="COLMAP threads (-1: all)")
    g.add_argument("--seed", type=int, default=d.seed, help="COLMAP random seed")
    add_bool_flag(g, "--colmap-log", False, "show COLMAP's own log")
    options.add_collection_flags(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _log(line: str) -> None:
    """Messages of the run: warnings (a model that looks wrong) on stderr, the rest on stdout."""
    print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore", SkippedLevelsWarning)  # small images: expected
    try:
        check_output_dir(args.out)  # before any work
        cfg = ReconstructionConfig(
            features=options.feature_config_from_args(args), matcher=options.matcher_config_from_args(args),
            camera=CameraConfig(args.camera_mode, args.camera_model, args.camera_params, args.refine_intrinsics),
            pair_mode=args.pairs, window=args.window, pairs_file=args.pairs_file,
            retrieval=RetrievalConfig(num_neighbours=args.num_neighbours, codebook=args.codebook), mapper=args.mapper,
            min_num_matches=args.min_num_matches, min_model_size=args.min_model_size,
            num_threads=args.num_threads, seed=args.seed,
            overwrite=args.overwrite, strict=args.strict)
        result = reconstruction.reconstruct(args.image_dir, args.out, cfg, progress=args.progress,
                                            verbose=args.colmap_log, log=_log)
    except reconstruction.SceneNotReconstructed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(reconstruction.format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
