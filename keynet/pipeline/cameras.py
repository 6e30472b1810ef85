"""COLMAP cameras: the camera modes and models, :class:`CameraConfig`, the default camera rule
(EXIF groups) and the one line that says what was assumed about the cameras."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pycolmap
from PIL import Image

PathLike = Union[str, os.PathLike]

#: COLMAP's own camera modes (``pycolmap.import_images``).
CAMERA_MODES = {"auto": pycolmap.CameraMode.AUTO, "single": pycolmap.CameraMode.SINGLE,
                "per-image": pycolmap.CameraMode.PER_IMAGE, "per-folder": pycolmap.CameraMode.PER_FOLDER}
#: ``CameraConfig.mode`` choices: ours (``grouped``, the default: :func:`camera_groups`) and COLMAP's.
CAMERA_MODE_CHOICES = ("grouped",) + tuple(CAMERA_MODES)
DEFAULT_CAMERA_MODE = "grouped"
CAMERA_MODELS = tuple(m for m in pycolmap.CameraModelId.__members__ if m != "INVALID")


@dataclass
class CameraConfig:
    """Cameras: ``mode`` (``grouped``, the default: one camera per group of images of the same
    size and the same EXIF camera or none, :func:`camera_groups`; ``auto``: COLMAP's default,
    one camera per image unless EXIF names the camera; ``single``: one camera shared by all
    images; ``per-image``; ``per-folder``), ``model`` (a COLMAP camera model; ``None``:
    COLMAP's default SIMPLE_RADIAL), ``params`` (the model's parameters in COLMAP order,
    full-resolution pixels; ``None``: from the image size and EXIF focal length, as COLMAP
    does), ``refine_intrinsics`` (False: the intrinsics stay as given)."""

    mode: str = DEFAULT_CAMERA_MODE
    model: Optional[str] = None
    params: Optional[Tuple[float, ...]] = None
    refine_intrinsics: bool = True

    def __post_init__(self) -> None:
        if self.mode not in CAMERA_MODE_CHOICES:
            raise ValueError(f"unknown camera mode {self.mode!r}; choose one of {', '.join(CAMERA_MODE_CHOICES)}")
        if self.model is not None and self.model not in CAMERA_MODELS:
            raise ValueError(f"unknown camera model {self.model!r}; COLMAP's models: {', '.join(CAMERA_MODELS)}")
        if self.params is not None:
            model = self.model or "SIMPLE_RADIAL"
            need = len(pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1).params)
            if len(self.params) != need:
                names = pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1).params_info
                raise ValueError(f"camera model {model} takes {need} parameters ({names}), got {len(self.params)}")
            self.params = tuple(float(p) for p in self.params)

    def reader_options(self) -> pycolmap.ImageReaderOptions:
        o = pycolmap.ImageReaderOptions()
        if self.model is not None:
            o.camera_model = self.model
        if self.params is not None:
            o.camera_params = ",".join(repr(p) for p in self.params)
        return o


def exif_camera(path: PathLike) -> Tuple[str, str, str]:
    """The camera an image's EXIF names: ``(make, model, focal length in mm)``, each ``""``
    where absent; all ``""`` for a file without (readable) EXIF."""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            focal = exif.get_ifd(0x8769).get(37386, exif.get(37386))  # Exif IFD, FocalLength
            make, model = exif.get(271, ""), exif.get(272, "")
    except Exception:  # noqa: BLE001 -- a malformed or unreadable EXIF is no EXIF
        return ("", "", "")
    text = lambda v: str(v).strip("\x00 ") if v is not None else ""  # noqa: E731
    try:
        focal_text = f"{float(focal):g}" if focal is not None else ""
    except (TypeError, ValueError, ZeroDivisionError):
        focal_text = ""
    return (text(make), text(model), focal_text)


def camera_groups(image_dir: PathLike, names: Sequence[str],
                  sizes: Mapping[str, Tuple[int, int]]) -> List[List[str]]:
    """The default camera rule (``CameraConfig(mode='grouped')``): images share one camera when
    they have the same size (``sizes[name]`` = (width, height); a name without a size reads
    its own) and their EXIF names the same camera -- make, model and focal length, so the
    settings of one zoom lens stay apart -- or none at all. Photos of one size without EXIF are
    most likely one camera. Groups in the order of their first image."""
    groups: Dict[Tuple, List[str]] = {}
    for name in names:
        path = Path(image_dir) / name
        size = sizes.get(name)
        if size is None:
            try:
                with Image.open(path) as im:
                    size = im.size
            except Exception:  # noqa: BLE001 -- COLMAP reports the unreadable image
                size = (-1, -1)
        groups.setdefault((tuple(size), exif_camera(path)), []).append(name)
    return list(groups.values())


def database_cameras(db_path: PathLike) -> Tuple[Dict[int, pycolmap.Camera], Dict[int, int]]:
    """The cameras of a database as imported (their priors: EXIF, given or guessed focal
    lengths) and the number of images of each."""
    db = pycolmap.Database.open(str(db_path))
    try:
        cams = {int(c.camera_id): c for c in db.read_all_cameras()}
        counts: Dict[int, int] = {}
        for im in db.read_all_images():
            counts[int(im.camera_id)] = counts.get(int(im.camera_id), 0) + 1
    finally:
        db.close()
    return cams, counts


_MODE_RULES = {"grouped": "one per image size and EXIF camera; photos of one size without EXIF share one",
               "auto": "COLMAP's: one per image unless EXIF names the camera",
               "single": "one for all images", "per-image": "one per image", "per-folder": "one per folder"}


def describe_cameras(camera: CameraConfig, cams: Mapping[int, pycolmap.Camera], counts: Mapping[int, int]) -> str:
    """What was assumed about the cameras, in one line (the summary's ``cameras:`` line)."""
    n_img, n_cam = sum(counts.values()), len(cams)
    model = camera.model or (next(iter(cams.values())).model.name if cams else "SIMPLE_RADIAL")
    with_prior = sum(1 for c in cams.values() if c.has_prior_focal_length)
    if camera.params is not None:
        prior = "the given --camera-params"
    elif with_prior == n_cam:
        prior = "focal length from EXIF"
    elif with_prior:
        prior = f"focal length from EXIF for {with_prior} of {n_cam}, the others guessed (1.2 x the longer side)"
    else:
        prior = "no EXIF focal length: guessed as 1.2 x the longer side"
    refine = "refined by bundle adjustment" if camera.refine_intrinsics else "held fixed"
    text = (f"{n_img} images -> {n_cam} camera{'s' if n_cam != 1 else ''} (--camera-mode {camera.mode}: "
            f"{_MODE_RULES[camera.mode]}), {model}, {prior}, {refine}")
    if camera.mode in ("grouped", "single") and n_cam < n_img:
        text += "; photos from different cameras need --camera-mode per-image"
    return text
