"""The checks of a finished reconstruction: signs that a model is wrong although COLMAP
reports success, and the pose errors of a model against ground truth."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pycolmap

from keynet.base import twoview

from .cameras import DEFAULT_CAMERA_MODE

#: The checks of a finished model (:func:`check_model`), stated, not tuned on data:
#: a perspective photo's field of view (of its longer side) lies within these degrees ...
PLAUSIBLE_FOV_DEG = (5.0, 130.0)
#: ... a refined focal length stays within this factor of a prior from EXIF or --camera-params
#: (a 2x crop of a photo keeps its EXIF focal length: the prior is then 2x off) ...
PRIOR_FOCAL_FACTOR = 2.0
#: ... photos that look like one camera (one size, the same EXIF camera or none) but were given
#: several get focal lengths within this factor of one another (one camera's per-image
#: self-calibration scatters by a few percent) ...
SAME_CAMERA_FOCAL_FACTOR = 1.5
#: ... the principal point lies within this fraction of the width / height of the image centre
#: (COLMAP keeps it where it was put; far off means wrong --camera-params) ...
PRINCIPAL_POINT_OFFSET = 0.25
#: ... and at most this share of the observations is behind its camera (a sound model has none).
MAX_BEHIND_SHARE = 0.05

def _field_of_view_deg(cam: pycolmap.Camera) -> float:
    f = float(cam.mean_focal_length())
    return float(np.degrees(2 * np.arctan(max(cam.width, cam.height) / (2 * f)))) if f > 0 else 180.0


def share_behind_cameras(rec: pycolmap.Reconstruction) -> float:
    """The share of a model's observations whose 3D point lies behind (or on the plane of)
    the camera that observes it (0 for a sound model: COLMAP drops such observations)."""
    ids = list(rec.point3D_ids())
    if not ids:
        return 0.0
    index = {pid: i for i, pid in enumerate(ids)}
    xyz = np.array([rec.points3D[pid].xyz for pid in ids], np.float64).reshape(-1, 3)
    behind = total = 0
    for im in rec.images.values():
        if not im.has_pose:
            continue
        rows = [index[p.point3D_id] for p in im.get_observation_points2D() if p.point3D_id in index]
        if not rows:
            continue
        m = np.asarray(im.cam_from_world().matrix(), np.float64)
        depth = xyz[rows] @ m[2, :3] + m[2, 3]
        behind += int((depth <= 0).sum())
        total += len(rows)
    return behind / total if total else 0.0


def check_model(rec: pycolmap.Reconstruction, priors: Mapping[int, pycolmap.Camera],
                mode: str = DEFAULT_CAMERA_MODE) -> List[Tuple[str, str]]:
    """Signs that a finished model is wrong although COLMAP reports success, as
    ``[(problem, fix)]`` (empty: none seen). ``priors``: the database's cameras
    (:func:`database_cameras`), ``mode``: the camera mode used (it chooses the fix). The rules,
    stated, not tuned on data:

    * a camera's field of view (longer side, fisheye models excepted) outside
      :data:`PLAUSIBLE_FOV_DEG`;
    * a refined focal length more than :data:`PRIOR_FOCAL_FACTOR` times off its prior from EXIF
      or ``--camera-params``;
    * cameras that look like one (same size and model, the same prior or none) with focal
      lengths more than :data:`SAME_CAMERA_FOCAL_FACTOR` apart;
    * a principal point more than :data:`PRINCIPAL_POINT_OFFSET` of the width / height from
      the image centre;
    * more than :data:`MAX_BEHIND_SHARE` of the observations behind their camera.
    """
    found: List[Tuple[str, str]] = []
    cams = {int(k): c for k, c in rec.cameras.items()}
    give_k = "give the intrinsics with --camera-params (pixels of the image files) and --refine-intrinsics false"
    one_camera = "--camera-mode single" if mode == "grouped" else "--camera-mode grouped"
    lo, hi = PLAUSIBLE_FOV_DEG
    odd_fov = [(k, _field_of_view_deg(c)) for k, c in cams.items()
               if "FISHEYE" not in c.model.name and not lo <= _field_of_view_deg(c) <= hi]
    if odd_fov:
        k, fov = max(odd_fov, key=lambda kf: abs(np.log(kf[1] / 40.0)))
        found.append((f"{len(odd_fov)} camera(s) with an implausible field of view (camera {k}: focal length "
                      f"{cams[k].mean_focal_length():.0f} px, {fov:.2g} deg)",
                      give_k if mode in ("grouped", "single") else f"{one_camera} or {give_k}"))
    off_prior = []
    for k, c in cams.items():
        p = priors.get(k)
        if p is not None and p.has_prior_focal_length:
            ratio = float(c.mean_focal_length()) / float(p.mean_focal_length())
            if not 1 / PRIOR_FOCAL_FACTOR <= ratio <= PRIOR_FOCAL_FACTOR:
                off_prior.append((k, ratio, float(p.mean_focal_length())))
    if off_prior:
        k, ratio, f0 = max(off_prior, key=lambda t: abs(np.log(t[1])))
        found.append((f"{len(off_prior)} camera(s) with a focal length far from its prior (camera {k}: "
                      f"{cams[k].mean_focal_length():.0f} px against {f0:.0f} px from EXIF or --camera-params)",
                      "check that prior (--camera-params in pixels of the image files, or the EXIF); if it is right, "
                      "hold it with --refine-intrinsics false"))
    look_alike: Dict[Tuple, List[int]] = {}
    for k, c in cams.items():
        p = priors.get(k, c)
        key = (c.width, c.height, c.model.name,
               round(float(p.mean_focal_length()), 1) if p.has_prior_focal_length else None)
        look_alike.setdefault(key, []).append(k)
    for (w, h, _, _), ks in look_alike.items():
        f = [float(cams[k].mean_focal_length()) for k in ks]
        if len(ks) > 1 and max(f) > SAME_CAMERA_FOCAL_FACTOR * min(f):
            found.append((f"focal lengths {min(f):.0f}-{max(f):.0f} px among {len(ks)} cameras of {w}x{h} photos "
                          f"that look like one camera", f"if they are one camera, {one_camera}"))
    off_centre = [k for k, c in cams.items()
                  if abs(c.principal_point_x - c.width / 2) > PRINCIPAL_POINT_OFFSET * c.width
                  or abs(c.principal_point_y - c.height / 2) > PRINCIPAL_POINT_OFFSET * c.height]
    if off_centre:
        c = cams[off_centre[0]]
        found.append((f"{len(off_centre)} camera(s) with the principal point far from the image centre (camera "
                      f"{off_centre[0]}: ({c.principal_point_x:.0f}, {c.principal_point_y:.0f}) in a "
                      f"{c.width}x{c.height} image)",
                      "check --camera-params: COLMAP's order (PINHOLE: fx,fy,cx,cy) in pixels of the image files"))
    behind = share_behind_cameras(rec)
    if behind > MAX_BEHIND_SHARE:
        found.append((f"{100 * behind:.0f}% of the observations behind their camera",
                      f"{give_k}, or try --mapper global"))
    return found


def model_warning(k: int, found: Sequence[Tuple[str, str]]) -> str:
    """One line for model ``k`` from :func:`check_model`'s findings: the problems, then the fixes."""
    fixes = list(dict.fromkeys(fix for _, fix in found))
    return f"model {k} may be wrong: {'; '.join(p for p, _ in found)}; try: {'; or '.join(fixes)}"


# ----------------------------------------------------------------------------- evaluation
@dataclass
class PoseErrors:
    """Accuracy of a model's cameras against ground truth."""

    registered: int
    centre_errors: np.ndarray  # per registered camera, after the similarity alignment (scene units)
    rotation_errors: np.ndarray  # degrees, per pair of registered cameras (relative rotations)
    sim3_scale: float

    def summary(self, unit_scale: float = 1.0) -> Dict[str, float]:
        c = self.centre_errors * unit_scale
        r = self.rotation_errors
        nan = float("nan")
        return {"centre_mean": float(c.mean()) if c.size else nan, "centre_max": float(c.max()) if c.size else nan,
                "rot_mean": float(r.mean()) if r.size else nan, "rot_max": float(r.max()) if r.size else nan}


def pose_errors(rec: pycolmap.Reconstruction, gt: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> PoseErrors:
    """Compare the registered images of ``rec`` with ground-truth cameras ``gt``:
    ``{name: (R_cam_from_world (3, 3), centre (3,))}``.

    Camera centres: the similarity (scale, rotation, translation) that best maps the
    estimated centres onto the true ones (Umeyama, ``pycolmap.estimate_sim3d``; 3 cameras
    at least), then the distance of each aligned centre to its true one. Rotations: for
    every pair (i, j) the angle between the estimated and the true relative rotation
    ``R_j R_i^T`` (independent of the alignment).
    """
    names, est_c, est_r = [], [], []
    for _, im in rec.images.items():
        if im.has_pose and im.name in gt:
            names.append(im.name)
            est_c.append(np.asarray(im.projection_center(), np.float64).reshape(3))
            est_r.append(np.asarray(im.cam_from_world().rotation.matrix(), np.float64))
    n = len(names)
    gt_c = np.array([np.asarray(gt[k][1], np.float64).reshape(3) for k in names]).reshape(n, 3)
    gt_r = [np.asarray(gt[k][0], np.float64) for k in names]
    centre = np.zeros(0)
    scale = float("nan")
    if n >= 3:
        sim = pycolmap.estimate_sim3d(np.array(est_c), gt_c)
        if sim is not None:
            scale = float(sim.scale)
            aligned = scale * np.array(est_c) @ np.asarray(sim.rotation.matrix()).T + np.asarray(sim.translation)
            centre = np.linalg.norm(aligned - gt_c, axis=1)
    rot = np.array([twoview.rotation_angle_deg((est_r[j] @ est_r[i].T) @ (gt_r[j] @ gt_r[i].T).T)
                    for i, j in combinations(range(n), 2)])
    return PoseErrors(n, centre, rot, scale)
