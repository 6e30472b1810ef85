"""Make the real-correspondence data of the descriptor training (docs/hardnet.md): patch
pairs across frames of fixed webcams, patch pairs of the tracks of Structure-from-Motion
reconstructions, and the real validation pairs that choose checkpoints.

Each part is a resumable stage under --out-dir, reused when its inputs and parameters are
unchanged:

  webcam/   patch pairs across frames of one webcam (real light, season and weather change)
            composed with random warps: train split from --train-webcams, val split from
            --val-webcams (keep whole webcams apart);
  sfm/      patch pairs of the 3D points of our own reconstructions of --sfm-scene folders
            (keynet reconstruct, one camera per scene, under sfm/<scene>/);
  val/      the validation pairs: --val-webcams frame pairs (identity ground truth) and the
            cross-sensor pairs of --multimodal-dir, with Key.Net keypoints and their patches;
  report.json  what was made.

Example (the recorded run):
  keynet hardnet-data --webcam-dir ../shared/data/webcam --multimodal-dir ../shared/data/multimodal \\
      --sfm-scene ../shared/data/strecha/fountain-P11/images ../shared/data/strecha/Herz-Jesus-P8/images
Then: keynet train-hardnet ... --extra-pairs datasets/hardnet_real/webcam datasets/hardnet_real/sfm \\
      --real-val datasets/hardnet_real/val --select-metric real_score
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from hardnet.data import ARRAY_KEYS, PatchPairConfig
from hardnet.real_validation import (EvalSetError, make_eval_set, multimodal_eval_pairs, webcam_eval_pairs)
from hardnet.sfm_pairs import pairs_from_tracks
from hardnet.webcam_pairs import WebcamError, prepare_webcam_pairs
from keynet.base import cache
from keynet.base.cli import ArgumentParser, add_bool_flag
from keynet.base.files import atomic_save_npy, atomic_write_bytes
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig, reconstruct
from keynet.pipeline.config import FeatureConfig
from keynet.pipeline.tracks import sfm_tracks

from .common import USER_ERRORS, keynet_keypoints

#: The webcams of each split (whole webcams apart). ``frankfurt`` is the only one with real
#: night frames and trains; validation keeps the darkest of the others (``stlouis``) and the
#: one spanning the most months (``mexico``, January to November).
TRAIN_WEBCAMS = ("chamonix", "courbevoie", "frankfurt", "panorama")
VAL_WEBCAMS = ("mexico", "stlouis")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="datasets/hardnet_real", help="where the stages are made")
    p.add_argument("--webcam-dir", default=None, help="folder of webcam folders (one folder of frames a camera)")
    p.add_argument("--train-webcams", nargs="+", default=list(TRAIN_WEBCAMS), help="webcams of the training pairs")
    p.add_argument("--val-webcams", nargs="+", default=list(VAL_WEBCAMS),
                   help="webcams of the validation (patch pairs and image pairs)")
    p.add_argument("--views-per-frame", type=int, default=12, help="warped pairs drawn per webcam frame")
    p.add_argument("--min-patch-std", type=float, default=2.0,
                   help="drop webcam pairs with a patch of grey-level std below this (black night sky)")
    p.add_argument("--val-pairs-per-webcam", type=int, default=20, help="frame pairs per validation webcam")
    p.add_argument("--multimodal-dir", default=None,
                   help="the cross-sensor set (VIS_IR/, RGB_NIR/ with their ground-truth JSON) for validation")
    p.add_argument("--sfm-scene", nargs="*", default=[], help="image folders to reconstruct for SfM-track pairs")
    p.add_argument("--sfm-max-image-size", type=int, default=1024, help="working size of the reconstructions")
    p.add_argument("--sfm-num-points", type=int, default=4096, help="keypoints per image of the reconstructions")
    p.add_argument("--sfm-pairs-per-point", type=int, default=3, help="pairs per 3D point (anchor + others)")
    p.add_argument("--keynet-weights", default="default", help="Key.Net weights of the validation keypoints")
    p.add_argument("--val-num-points", type=int, default=2048, help="keypoints per validation image")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw")
    add_bool_flag(p, "--progress", True, "progress bars")
    return p


def _scene_name(folder: Path) -> str:
    folder = Path(folder)
    return folder.parent.name if folder.name == "images" else folder.name


def make_sfm_pairs(scenes: Sequence[str], out_dir: Path, args, log=print) -> Dict[str, int]:
    """Reconstruct each scene (resumable), then its track pairs into ``out_dir`` (``train_*``)."""
    parts: List[Dict[str, np.ndarray]] = []
    counts: Dict[str, int] = {}
    offset = 1_000_000  # image ids apart from any photo or webcam id
    for s, scene in enumerate(scenes):
        name = _scene_name(Path(scene))
        run = out_dir / name
        cfg = ReconstructionConfig(features=FeatureConfig(num_points=args.sfm_num_points,
                                                          max_image_size=args.sfm_max_image_size),
                                   camera=CameraConfig(mode="single"), seed=args.seed)
        result = reconstruct(scene, run, cfg, progress=args.progress, log=log)
        tracks, images = sfm_tracks(result.model_dirs[0], run / "features.h5", scene, args.sfm_max_image_size)
        part = pairs_from_tracks(tracks, images, args.sfm_pairs_per_point, seed=args.seed,
                                 image_offset=offset + 1000 * s)
        counts[name] = int(len(part["a"]))
        log(f"sfm {name}: {result.best.num_reg_images()} images registered, {len(tracks)} 3D points, "
            f"{sum(len(t) >= 2 for t in tracks)} with 2+ observations -> {counts[name]} patch pairs")
        parts.append(part)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in ARRAY_KEYS}
    for k in ARRAY_KEYS:
        atomic_save_npy(out_dir / f"train_{k}.npy", arrays[k])
        atomic_save_npy(out_dir / f"val_{k}.npy", arrays[k][:0])
    cache.commit(out_dir, {"version": 1, "params": {"source": "sfm", "scenes": [str(s) for s in scenes],
                                                    "max_image_size": args.sfm_max_image_size,
                                                    "num_points": args.sfm_num_points,
                                                    "pairs_per_point": args.sfm_pairs_per_point, "seed": args.seed},
                           "counts": {"train": int(len(arrays["a"])), "val": 0}, "per_scene": counts})
    return counts


def run(args) -> Dict[str, object]:
    out = Path(args.out_dir)
    report: Dict[str, object] = {}
    if args.webcam_dir:
        w = Path(args.webcam_dir)
        cfg = PatchPairConfig(views_per_image=args.views_per_frame, min_patch_std=args.min_patch_std, seed=args.seed)
        counts = prepare_webcam_pairs([w / n for n in args.train_webcams], [w / n for n in args.val_webcams],
                                      out / "webcam", cfg, progress=args.progress)
        man = cache.read_manifest(out / "webcam")
        report["webcam"] = {"counts": counts, "per_webcam": man.get("per_webcam")}
        print(f"webcam pairs: {counts['train']} train ({', '.join(args.train_webcams)}), "
              f"{counts['val']} val ({', '.join(args.val_webcams)}) -> {out / 'webcam'}")
    if args.sfm_scene:
        counts = make_sfm_pairs(args.sfm_scene, out / "sfm", args)
        report["sfm"] = counts
        print(f"sfm pairs: {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())}) "
              f"-> {out / 'sfm'}")
    pairs = []
    if args.webcam_dir and args.val_pairs_per_webcam > 0:
        pairs += webcam_eval_pairs(args.webcam_dir, args.val_webcams, args.val_pairs_per_webcam, args.seed)
    if args.multimodal_dir:
        pairs += multimodal_eval_pairs(args.multimodal_dir)
    if pairs:
        kp = keynet_keypoints(args.keynet_weights, args.val_num_points)
        make_eval_set(pairs, kp, out / "val", f"keynet:{args.keynet_weights}:{args.val_num_points}",
                      progress=args.progress)
        groups = {g: sum(p.group == g for p in pairs) for g in sorted({p.group for p in pairs})}
        report["val"] = groups
        print(f"validation pairs: {', '.join(f'{g} {n}' for g, n in groups.items())} -> {out / 'val'}")
    if not report:
        raise ValueError("nothing to make: give --webcam-dir, --multimodal-dir or --sfm-scene")
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        run(args)
    except (WebcamError, EvalSetError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
