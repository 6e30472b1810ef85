#!/usr/bin/env python
"""SfM against ground truth on Strecha scenes: our Key.Net + HardNet pipeline
(``keynet.pipeline.reconstruction``) vs COLMAP's own SIFT pipeline (``pycolmap.extract_features`` +
``match_exhaustive``), both with the ground-truth intrinsics held fixed and the same
COLMAP verification and incremental mapper, so that only features and matching differ.

For each scene and pipeline: registered images, 3D points, mean track length, mean
reprojection error (px), camera-centre error after a similarity alignment of the centres
(mean / max, mm; the scenes are in metres), relative-rotation error over all pairs of
registered cameras (mean / max, degrees), and wall time (ours: also of each stage).

``--mapper incremental global hierarchical`` maps the same verified matches with each of
COLMAP's mappers (our features and matches are computed once and reused; SIFT's too) and
checks every other mapper against the incremental one: every image registered, camera
errors within 10% of the incremental mapper's.

Both pipelines compute their features at the same ``--max-image-size`` (longest side) and
map them back to full resolution (COLMAP's SIFT does that itself), so the ground-truth
intrinsics of the full 3072x2048 images apply unchanged.

    python benchmarks/sfm_strecha.py --data-dir ../shared/data/strecha --max-image-size 1536
    python benchmarks/sfm_strecha.py --pipelines ours --mapper incremental global
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


def run_ours(image_dir: Path, names: List[str], out: Path,
             cfg: ReconstructionConfig) -> Tuple[pycolmap.Reconstruction, float, Dict[str, float]]:
    t = time.time()
    res = reconstruction.reconstruct(image_dir, out, cfg, progress=False, log=lambda s: None, image_list=names)
    return res.best, time.time() - t, res.seconds


def run_colmap_sift(image_dir: Path, names: List[str], out: Path, cfg: ReconstructionConfig,
                    max_image_size: int, mappers: Tuple[str, ...] = ("incremental",)
                    ) -> Dict[str, Tuple[pycolmap.Reconstruction, float, Dict[str, float]]]:
    """COLMAP's default SIFT pipeline (CPU) with the same cameras, verification and mappers
    (``{mapper: (best model, seconds, seconds by stage)}``; the features and matches are
    computed once, each mapper's time counts them)."""
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
    shared = time.time() - t
    out_models = {}
    for mapper in mappers:
        t = time.time()
        sparse = out / f"sparse-{mapper}"
        if sparse.exists():
            shutil.rmtree(sparse)
        sparse.mkdir(parents=True)
        models = reconstruction.run_mapper(dataclasses.replace(cfg, mapper=mapper), db, image_dir, sparse)
        models = {k: r for k, r in models.items() if r.num_reg_images() > 0}
        if not models:
            raise RuntimeError(f"COLMAP SIFT built no model for {image_dir} with the {mapper} mapper")
        best = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
        mapping = time.time() - t
        out_models[mapper] = (best, shared + mapping, {"features+matching": shared, "mapping": mapping})
    return out_models


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
    head = ("| scene | pipeline | mapper | registered | points | track length | reproj. error (px) | centre error "
            "mean / max (mm) | rel. rotation error mean / max (deg) | time (s) | stages (s) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in dict(r.get("stages", {})).items())
        lines.append(f"| {r['scene']} | {r['pipeline']} | {r.get('mapper', 'incremental')} | "
                     f"{r['registered']}/{r['images']} | {r['points']} | "
                     f"{r['track_length']:.2f} | {r['reproj_error']:.3f} | {r['centre_mean_mm']:.1f} / "
                     f"{r['centre_max_mm']:.1f} | {r['rot_mean_deg']:.3f} / {r['rot_max_deg']:.3f} | "
                     f"{r['seconds']:.0f} | {stages} |")
    return "\n".join(lines)


def mapper_checks(rows: List[Dict[str, object]], tolerance: float = 0.10) -> List[str]:
    """Each non-incremental row against the incremental row of the same scene and pipeline:
    every image registered, mean centre and rotation errors within ``tolerance`` (relative)."""
    out = []
    for r in rows:
        if r.get("mapper", "incremental") == "incremental":
            continue
        ref = next((q for q in rows if q["scene"] == r["scene"] and q["pipeline"] == r["pipeline"]
                    and q.get("mapper", "incremental") == "incremental"), None)
        whole = r["registered"] == r["images"]
        if ref is None:
            out.append(f"{r['scene']}: {r['pipeline']}, {r['mapper']}: {r['registered']}/{r['images']} registered "
                       "(no incremental row to compare with)")
            continue
        ratios = {k: r[k] / ref[k] if ref[k] else float("nan") for k in ("centre_mean_mm", "rot_mean_deg")}
        ok = whole and all(v <= 1 + tolerance for v in ratios.values())
        out.append(f"{r['scene']}: {r['pipeline']}, {r['mapper']} vs incremental: {r['registered']}/{r['images']} "
                   f"registered, centre error x{ratios['centre_mean_mm']:.2f}, rotation error "
                   f"x{ratios['rot_mean_deg']:.2f}, time {r['seconds']:.0f} s vs {ref['seconds']:.0f} s: "
                   f"{'PASS' if ok else 'FAIL'} (whole, errors within {tolerance:.0%})")
    return out


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
    p.add_argument("--mapper", nargs="+", choices=reconstruction.MAPPERS, default=["incremental"],
                   help="COLMAP mapper(s) to run on the same matches (incremental, global, hierarchical); the "
                        "others are checked against incremental")
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
            runs = {}
            if pipe.startswith("ours"):
                pcfg = cfg
                if pipe == "ours-official":
                    pcfg = dataclasses.replace(cfg, features=dataclasses.replace(fcfg, subpixel=False))
                for k, mapper in enumerate(args.mapper):  # the features and matches of the first are reused
                    runs[mapper] = run_ours(sdir / "images", names, out, dataclasses.replace(
                        pcfg, mapper=mapper, overwrite=pcfg.overwrite and k == 0))
                label = (f"Key.Net+HardNet {fcfg.num_points} pts, {cfg.matcher.method} "
                         f"{cfg.matcher.resolved_threshold}, subpixel {pcfg.features.subpixel}")
            else:
                runs = run_colmap_sift(sdir / "images", names, out, cfg, args.max_image_size, tuple(args.mapper))
                label = "COLMAP SIFT (default options)"
            for mapper, (rec, sec, stages) in runs.items():
                row = {"scene": scene, "pipeline": label, "mapper": mapper, **evaluate(rec, gt, sec),
                       "stages": stages}
                rows.append(row)
                models[pipe if mapper == args.mapper[0] else f"{pipe}/{mapper}"] = rec
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
    checks = mapper_checks(rows)
    if checks:
        print("\n".join(checks))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "agreement": agreement, "mapper_checks": checks},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
