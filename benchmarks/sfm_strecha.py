#!/usr/bin/env python
"""SfM against ground truth on Strecha scenes: our Key.Net + HardNet pipeline
(``keynet.pipeline.reconstruction``) vs COLMAP's own SIFT pipeline (``pycolmap.extract_features`` +
``match_exhaustive``), both with the ground-truth intrinsics held fixed and the same
COLMAP verification and incremental mapper, so that only features and matching differ.

For each scene and pipeline: registered images, 3D points, mean track length, mean
reprojection error (px), camera-centre error after a similarity alignment of the centres
(mean / max, mm; the scenes are in metres), relative-rotation error over all pairs of
registered cameras (mean / max, degrees), and wall time.

Both pipelines compute their features at the same ``--max-image-size`` (longest side) and
map them back to full resolution (COLMAP's SIFT does that itself), so the ground-truth
intrinsics of the full 3072x2048 images apply unchanged.

    python benchmarks/sfm_strecha.py --data-dir ../shared/data/strecha --max-image-size 1536
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

from keynet.base.cli import str2bool  # noqa: E402
from keynet.commands import options
from keynet.pipeline import matching, reconstruction  # noqa: E402
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig  # noqa: E402

GroundTruth = Dict[str, Tuple[np.ndarray, np.ndarray]]


def read_strecha_camera(path: Path) -> Dict[str, np.ndarray]:
    """A Strecha ``.camera`` file: K (3x3), distortion (3), R (3x3, camera-to-world: its
    columns are the camera axes in world coordinates), C (camera centre), (width, height)."""
    v = np.array(path.read_text().split(), dtype=np.float64)
    if v.size != 26:
        raise ValueError(f"{path}: expected 26 numbers (K, distortion, R, C, width height), got {v.size}")
    return {"K": v[:9].reshape(3, 3), "dist": v[9:12], "R_c2w": v[12:21].reshape(3, 3), "C": v[21:24],
            "size": v[24:26].astype(int)}


def load_scene(scene: Path) -> Tuple[List[str], GroundTruth, np.ndarray, Tuple[int, int]]:
    """Image names, ground truth ``{name: (R_cam_from_world, C)}``, the shared K and the
    image size of a Strecha scene folder (``images/``, ``gt_dense_cameras/``)."""
    names = sorted(p.name for p in (scene / "images").glob("*.jpg"))
    gt: GroundTruth = {}
    K, size = None, None
    for n in names:
        cam = read_strecha_camera(scene / "gt_dense_cameras" / f"{n}.camera")
        gt[n] = (cam["R_c2w"].T, cam["C"])
        if K is None:
            K, size = cam["K"], tuple(int(s) for s in cam["size"])
        elif not np.allclose(K, cam["K"]):
            raise ValueError(f"{scene}: the cameras do not share their intrinsics")
    return names, gt, K, size


def pinhole(K: np.ndarray) -> Tuple[float, float, float, float]:
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])


def run_ours(image_dir: Path, names: List[str], out: Path, cfg: ReconstructionConfig) -> Tuple[pycolmap.Reconstruction, float]:
    t = time.time()
    res = reconstruction.reconstruct(image_dir, out, cfg, progress=False, log=lambda s: None, image_list=names)
    return res.best, time.time() - t


def run_colmap_sift(image_dir: Path, names: List[str], out: Path, cfg: ReconstructionConfig,
                    max_image_size: int) -> Tuple[pycolmap.Reconstruction, float]:
    """COLMAP's default SIFT pipeline (CPU) with the same cameras, verification and mapper."""
    t = time.time()
    out.mkdir(parents=True, exist_ok=True)
    db = out / "database.db"
    if db.exists():
        db.unlink()
    pycolmap.Database.open(str(db)).close()
    ext = pycolmap.FeatureExtractionOptions()
    ext.max_image_size = int(max_image_size) if max_image_size else 3200
    ext.num_threads = cfg.num_threads
    pycolmap.extract_features(str(db), str(image_dir), image_names=names,
                              camera_mode=reconstruction.CAMERA_MODES[cfg.camera.mode],
                              reader_options=cfg.camera.reader_options(), extraction_options=ext,
                              device=pycolmap.Device.cpu)
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = cfg.num_threads
    pycolmap.match_exhaustive(str(db), matching_options=mo,
                              verification_options=reconstruction.verification_options(cfg),
                              device=pycolmap.Device.cpu)
    sparse = out / "sparse"
    if sparse.exists():
        shutil.rmtree(sparse)
    sparse.mkdir(parents=True)
    models = pycolmap.incremental_mapping(str(db), str(image_dir), str(sparse), reconstruction.mapper_options(cfg))
    if not models:
        raise RuntimeError(f"COLMAP SIFT built no model for {image_dir}")
    best = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    return best, time.time() - t


def evaluate(rec: pycolmap.Reconstruction, gt: GroundTruth, seconds: float) -> Dict[str, float]:
    row = reconstruction.model_stats(rec)
    err = reconstruction.pose_errors(rec, gt)
    s = err.summary(unit_scale=1000.0)  # metres -> mm
    row.update({"centre_mean_mm": s["centre_mean"], "centre_max_mm": s["centre_max"],
                "rot_mean_deg": s["rot_mean"], "rot_max_deg": s["rot_max"], "seconds": seconds,
                "images": len(gt)})
    return row


def as_ground_truth(rec: pycolmap.Reconstruction) -> GroundTruth:
    """A model's registered cameras in the ground-truth form (to compare two models)."""
    return {im.name: (np.asarray(im.cam_from_world().rotation.matrix()), np.asarray(im.projection_center()).ravel())
            for _, im in rec.images.items() if im.has_pose}


def table(rows: List[Dict[str, object]]) -> str:
    head = ("| scene | pipeline | registered | points | track length | reproj. error (px) | centre error mean / max "
            "(mm) | rel. rotation error mean / max (deg) | time (s) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['pipeline']} | {r['registered']}/{r['images']} | {r['points']} | "
                     f"{r['track_length']:.2f} | {r['reproj_error']:.3f} | {r['centre_mean_mm']:.1f} / "
                     f"{r['centre_max_mm']:.1f} | {r['rot_mean_deg']:.3f} / {r['rot_max_deg']:.3f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "strecha"),
                   help="folder of Strecha scenes (each with images/ and gt_dense_cameras/)")
    p.add_argument("--scenes", nargs="*", default=None, help="scene folder names (default: all)")
    p.add_argument("--work-dir", default="/tmp/keynet_sfm_strecha", help="where the reconstructions are written")
    p.add_argument("--pipelines", nargs="+", choices=("ours", "ours-official", "sift"), default=["ours", "sift"],
                   help="ours: Key.Net + HardNet with the feature options below; ours-official: the same with "
                        "--subpixel false (the official keypoint positions); sift: COLMAP's SIFT pipeline")
    p.add_argument("--num-threads", type=int, default=-1, help="COLMAP threads")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    p.add_argument("--keep", type=str2bool, default=False, metavar="BOOL",
                   help="reuse features/matches of a previous run in --work-dir")
    # --max-image-size 1536 by default: half of Strecha's 3072 (an exact factor 2), for both
    # pipelines; full resolution takes ~4x longer on a 2-core CPU
    options.add_feature_args(p, matching.FeatureConfig(max_image_size=1536))
    options.add_matcher_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    pycolmap.logging.minloglevel = 2
    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"[ERROR] Strecha folder not found: {data}", file=sys.stderr)
        return 2
    scenes = args.scenes or sorted(p.name for p in data.iterdir() if (p / "gt_dense_cameras").is_dir())
    fcfg = options.feature_config_from_args(args)
    rows: List[Dict[str, object]] = []
    agreement: List[str] = []
    for scene in scenes:
        sdir = data / scene
        names, gt, K, size = load_scene(sdir)
        cfg = ReconstructionConfig(features=fcfg, matcher=options.matcher_config_from_args(args),
                                   camera=CameraConfig("single", "PINHOLE", pinhole(K), refine_intrinsics=False),
                                   num_threads=args.num_threads, overwrite=not args.keep)
        models: Dict[str, pycolmap.Reconstruction] = {}
        print(f"{scene}: {len(names)} images {size[0]}x{size[1]}, K fixed to {pinhole(K)}", flush=True)
        for pipe in args.pipelines:
            out = Path(args.work_dir) / scene / pipe
            if pipe.startswith("ours"):
                pcfg = cfg
                if pipe == "ours-official":
                    pcfg = dataclasses.replace(cfg, features=dataclasses.replace(fcfg, subpixel=False))
                rec, sec = run_ours(sdir / "images", names, out, pcfg)
                label = (f"Key.Net+HardNet {fcfg.num_points} pts, {cfg.matcher.method} "
                         f"{cfg.matcher.resolved_threshold}, subpixel {pcfg.features.subpixel}")
            else:
                rec, sec = run_colmap_sift(sdir / "images", names, out, cfg, args.max_image_size)
                label = "COLMAP SIFT (default options)"
            row = {"scene": scene, "pipeline": label, **evaluate(rec, gt, sec)}
            rows.append(row)
            models[pipe] = rec
            print(table([row]).splitlines()[-1], flush=True)
        # how far the pipelines are from each other, next to how far each is from the ground truth
        for a, b in itertools.combinations(models, 2):
            r = reconstruction.pose_errors(models[a], as_ground_truth(models[b])).rotation_errors
            agreement.append(f"{scene}: {a} vs {b}: relative rotations differ by {r.mean():.3f} deg on average "
                             f"(max {r.max():.3f})")
            print(agreement[-1], flush=True)
    print()
    print(table(rows))
    print("\n".join(agreement))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "agreement": agreement}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
