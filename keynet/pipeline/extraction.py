"""Feature extraction: Key.Net keypoints + HardNet descriptors for one image (Python API)
and for an image list (the work behind ``extract_multiscale_features.py``)."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from hardnet import HardNetDescriptor, HardNetWeightsError, OrientationEstimator, load_hardnet, load_orinet
from hardnet.affnet import AffineShapeEstimator
from hardnet.patches import DEFAULT_MAGNIFICATION, patch_lafs
from hardnet.weights import load_affnet
from keynet.base.files import locate_image, read_image_list
from keynet.base.images import ImageReadError
from keynet.base.resources import WEIGHTS_DIR
from keynet.base.runner import RunSummary, Shard, run_list
from keynet.detection import DetectorSettings, ImageTooSmallError, KeyNetDetector
from keynet.engine import EngineConfig
from keynet.weights import WeightsError, load_keynet

from . import hloc_io

PRETRAINED_DIR = WEIGHTS_DIR
DEFAULT_DETECTOR = PRETRAINED_DIR / "keynet.pt"
DEFAULT_DESCRIPTOR = PRETRAINED_DIR / "hardnet.pt"
DEFAULT_TINY = PRETRAINED_DIR / "tiny_keynet.pt"
DEFAULT_ORIENTATION = PRETRAINED_DIR / "orinet.pt"
DEFAULT_AFFINE = PRETRAINED_DIR / "affnet.pt"
#: ``--affine`` values besides a weights path: none (the official pipeline), learned (the
#: shipped AffNet), moments (the second-moment / Baumberg iteration, kornia's estimator)
AFFINE_CHOICES = ("none", "learned", "moments")


def resolve_detector_weights(path_or_name: Optional[Union[str, os.PathLike]]) -> Path:
    """``None``/``'default'``/``'keynet'`` -> the shipped ``pretrained_nets/keynet.pt``;
    ``'tiny'`` -> the shipped Tiny-Key.Net ``pretrained_nets/tiny_keynet.pt``; else the given path."""
    if str(path_or_name) == "tiny":
        return DEFAULT_TINY
    if path_or_name is None or str(path_or_name) in ("default", "keynet"):
        if not DEFAULT_DETECTOR.is_file():
            raise WeightsError(
                f"no shipped Key.Net weights at {DEFAULT_DETECTOR} yet (they are produced by train.py). "
                "Pass a weights file with --detector, e.g. the official TF weights as .npz "
                "(keynet_tf_official.npz), the authors' keynet_pytorch.pth or a checkpoint from train.py")
        return DEFAULT_DETECTOR
    return Path(path_or_name)


def load_detector(path_or_name: Optional[Union[str, os.PathLike]] = None,
                  device: Optional[Union[str, torch.device]] = None, engine: Optional[EngineConfig] = None,
                  subpixel: bool = False, **settings) -> KeyNetDetector:
    """Load Key.Net weights (any supported format, or ``'default'`` for the shipped ones) into
    a multi-scale :class:`KeyNetDetector`. Keyword arguments are :class:`DetectorSettings`;
    ``engine``: the inference engine's switches (:class:`~keynet.engine.EngineConfig`);
    ``subpixel`` (a setting too, ``DetectorSettings.subpixel``): the same points moved to
    their sub-pixel maxima, mapped by pixel centres; not the official positions."""
    model, _ = load_keynet(resolve_detector_weights(path_or_name))
    return KeyNetDetector(model, DetectorSettings(subpixel=subpixel, **settings), device=device, engine=engine)


def load_descriptor(path_or_name: Optional[Union[str, os.PathLike]] = "default",
                    device: Optional[Union[str, torch.device]] = None):
    """HardNet descriptor from a weights file; ``'default'`` -> ``pretrained_nets/hardnet.pt``
    if present, else ``None``; ``None``/``'none'`` -> ``None`` (no descriptors)."""
    if path_or_name is None or str(path_or_name).lower() == "none":
        return None
    if str(path_or_name) == "default":
        if not DEFAULT_DESCRIPTOR.is_file():
            return None
        path_or_name = DEFAULT_DESCRIPTOR
    model, _ = load_hardnet(path_or_name)
    return HardNetDescriptor(model, device=device)


def load_orientation(spec: Optional[Union[str, os.PathLike]] = "default",
                     device: Optional[Union[str, torch.device]] = None) -> Optional[OrientationEstimator]:
    """Keypoint orientation estimator: ``'default'``/``'learned'`` -> the shipped OriNet
    (``pretrained_nets/orinet.pt``); ``'gradient'`` -> the classical dominant gradient
    orientation; a path -> an OriNet weights file; ``None``/``'none'`` -> ``None`` (upright)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "gradient":
        return OrientationEstimator("gradient", device=device)
    path = DEFAULT_ORIENTATION if str(spec) in ("default", "learned") else Path(spec)
    if str(spec) in ("default", "learned") and not path.is_file():
        raise HardNetWeightsError(f"no shipped orientation network at {path}; train one with "
                                  "keynet train-orientation, or use the classical estimator ('gradient')")
    model, _ = load_orinet(path)
    return OrientationEstimator("learned", model, device=device)


def load_affine(spec: Optional[Union[str, os.PathLike]] = "none",
                device: Optional[Union[str, torch.device]] = None) -> Optional[AffineShapeEstimator]:
    """Affine-shape estimator of keypoints (:mod:`hardnet.affnet`): ``'learned'``/``'default'``
    -> the shipped AffNet (``pretrained_nets/affnet.pt``); ``'moments'`` -> the second-moment
    (Baumberg) iteration, kornia's ``PatchAffineShapeEstimator``; a path -> an AffNet weights
    file; ``None``/``'none'`` -> ``None`` (isotropic regions, the official pipeline)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "moments":
        return AffineShapeEstimator("moments", device=device)
    path = DEFAULT_AFFINE if str(spec) in ("default", "learned") else Path(spec)
    if str(spec) in ("default", "learned") and not path.is_file():
        raise HardNetWeightsError(f"no shipped affine-shape network at {path}; use --affine moments or an "
                                  "AffNet weights file")
    model, _ = load_affnet(path)
    return AffineShapeEstimator("learned", model, device=device)


@dataclass
class Features:
    """The features of one image.

    ``keypoints``: (N, 4) x, y, scale, score (best first; the ``.kpt.npy`` contract);
    ``descriptors``: (N, 128) float32 or None; ``orientations``: (N,) float32 degrees in
    [0, 360) (image coordinates, OpenCV's ``KeyPoint.angle`` convention) or None (upright);
    ``shapes``: (N, 2, 2) float32 affine shapes (:mod:`hardnet.affnet`: lower triangular,
    determinant 1; the orientation is the angle inside the shape) or None (isotropic).
    """
    keypoints: np.ndarray
    descriptors: Optional[np.ndarray] = None
    orientations: Optional[np.ndarray] = None
    #: (width, height) of the image
    image_size: Optional[Tuple[int, int]] = None
    shapes: Optional[np.ndarray] = None

    def lafs(self, magnification: float = DEFAULT_MAGNIFICATION) -> torch.Tensor:
        """The whole kornia local affine frames ``(1, N, 2, 3)`` of the descriptor patches:
        centre, scale, affine shape and orientation (``kornia.feature.extract_patches_simple``
        cuts the same patches; kornia's angle is the negative of ours, see
        :func:`hardnet.patches.patch_lafs`)."""
        k = torch.from_numpy(np.asarray(self.keypoints[:, :3], dtype=np.float32))
        ori = None if self.orientations is None else torch.deg2rad(torch.from_numpy(
            np.asarray(self.orientations, dtype=np.float32)))
        shp = None if self.shapes is None else torch.from_numpy(np.asarray(self.shapes, dtype=np.float32))
        return patch_lafs(k, ori, magnification, shapes=shp)


class Extractor:
    """Key.Net detector + (optional) affine shape + (optional) orientation + (optional)
    HardNet descriptor, composed as kornia composes them: shape, then orientation (on the
    shape-normalised patch), then the descriptor (on the patch cut through the whole frame).

    ``orientation``: an :class:`hardnet.OrientationEstimator` (see :func:`load_orientation`);
    ``None`` = upright patches (the official pipeline). ``affine``: an
    :class:`hardnet.affnet.AffineShapeEstimator` (see :func:`load_affine`); ``None`` =
    isotropic regions (the official pipeline).
    """

    def __init__(self, detector: KeyNetDetector, descriptor=None,
                 orientation: Optional[OrientationEstimator] = None,
                 affine: Optional[AffineShapeEstimator] = None) -> None:
        self.detector = detector
        self.descriptor = descriptor
        self.orientation = orientation
        self.affine = affine

    def features(self, image, channel_order: str = "rgb") -> Features:
        """Image (path or array) -> :class:`Features`. ``channel_order``: of a colour array
        (``rgb``, or ``bgr`` for one from ``cv2.imread``)."""
        img = self.detector.prepare(image, channel_order)
        return self.features_at(img, self.detector.detect_prepared(img))

    def features_at(self, img: np.ndarray, kpts: np.ndarray) -> Features:
        """:class:`Features` of given keypoints ((N, >=3) x, y, scale) on an image returned by
        ``detector.prepare``: shape, orientation and descriptors only (no detection)."""
        shapes = self.affine.estimate(img, kpts) if self.affine is not None else None
        with_shapes = {} if shapes is None else {"shapes": shapes}  # estimators without shapes keep working
        ori = self.orientation.estimate(img, kpts, **with_shapes) if self.orientation is not None else None
        desc = self.descriptor.describe(img, kpts, ori, **with_shapes) if self.descriptor is not None else None
        return Features(kpts, desc, ori, (int(img.shape[1]), int(img.shape[0])), shapes)

    def extract(self, image, channel_order: str = "rgb") -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Image (path or array) -> ``(keypoints (N, 4) x, y, scale, score; descriptors (N, 128)
        or None when no descriptor is loaded)``; the orientations are in :meth:`features`."""
        f = self.features(image, channel_order)
        return f.keypoints, f.descriptors

    def extract_with_orientation(self, image, channel_order: str = "rgb") -> Tuple[np.ndarray, ...]:
        """``(keypoints, descriptors, orientations)`` (the list runner's three outputs), and
        the affine shapes fourth when the extractor has an affine-shape estimator."""
        f = self.features(image, channel_order)
        if self.affine is not None:
            return f.keypoints, f.descriptors, f.orientations, f.shapes
        return f.keypoints, f.descriptors, f.orientations


@functools.lru_cache(maxsize=4)
def _shipped_extractor(descriptor: str) -> "Extractor":
    return Extractor(load_detector(), load_descriptor(descriptor))


def extract(image, detector: Optional[KeyNetDetector] = None, descriptor="default", channel_order: str = "rgb"
            ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One-call API: ``kpts, desc = keynet.extract(image)``.

    ``detector``: a :class:`KeyNetDetector` (default: the shipped weights, loaded once and
    cached); ``descriptor``: a HardNet weights path, ``'default'`` (shipped), ``'none'``, or
    a ready :class:`hardnet.HardNetDescriptor`; ``channel_order``: of a colour array (``rgb``,
    or ``bgr`` for one from ``cv2.imread``).
    """
    spec = descriptor is None or isinstance(descriptor, (str, os.PathLike))
    if detector is None and spec:
        return _shipped_extractor(str(descriptor)).extract(image, channel_order)
    det = detector or load_detector()
    desc = load_descriptor(descriptor) if spec else descriptor
    return Extractor(det, desc).extract(image, channel_order)


def run_extraction(list_images: Union[str, os.PathLike], results_dir: Union[str, os.PathLike],
                   network_version: str, extractor: Extractor, overwrite: bool = False,
                   order_coord: str = "xysr", progress: bool = True,
                   data_dir: Optional[Union[str, os.PathLike]] = None, shard: Optional[Shard] = None) -> RunSummary:
    """Extract features for every image of a list into the official layout
    ``<results_dir>/<network_version>/<image path>.{kpt,dsc}.npy``.

    Existing outputs are skipped unless ``overwrite``; a failing image is recorded and the
    rest processed; every file is written atomically. ``data_dir``: where the images are
    when the list uses the official ``hpatches-sequences-release/<seq>/<k>.ppm`` lines (the
    leading folder is replaced by ``data_dir``; the output layout keeps the line as written).
    ``shard``: this process's share of the list (several processes, e.g. under ``torchrun``).
    An extractor with an orientation estimator also writes ``<image path>.ori.npy``, one with
    an affine-shape estimator ``<image path>.aff.npy`` (N x 2 x 2).
    """
    items = read_image_list(list_images)
    if shard is not None:
        items = shard.take(items)
    list_dir = Path(list_images).resolve().parent
    oriented = extractor.orientation is not None
    shaped = extractor.affine is not None
    return run_list(items, results_dir, network_version,
                    extractor.extract_with_orientation if oriented or shaped else extractor.extract,
                    lambda item: locate_image(item, list_dir, data_dir), overwrite=overwrite,
                    order_coord=order_coord, descriptors=extractor.descriptor is not None, progress=progress,
                    bad_input=(ImageReadError, ImageTooSmallError), orientations=oriented, shapes=shaped)


def h5_output_path(results_dir: Union[str, os.PathLike], network_version: str, shard: Optional[Shard] = None) -> Path:
    """``<results>/<version>/features.h5`` (one process) or ``features.rank<r>.h5`` (rank r of several)."""
    name = "features.h5" if shard is None or shard.world <= 1 else f"features.rank{shard.rank}.h5"
    return Path(results_dir) / network_version / name


def run_extraction_h5(list_images: Union[str, os.PathLike], results_dir: Union[str, os.PathLike],
                      network_version: str, extractor: Extractor, overwrite: bool = False, progress: bool = True,
                      data_dir: Optional[Union[str, os.PathLike]] = None, shard: Optional[Shard] = None
                      ) -> RunSummary:
    """Like :func:`run_extraction`, into one HDF5 file per process in hloc's ``features.h5``
    layout (:mod:`keynet.pipeline.hloc_io`; group = the list line without a leading '/'; keypoints,
    descriptors, scores, scales, orientations when estimated, image size) at
    :func:`h5_output_path`. Resumable: complete groups are skipped (``overwrite`` redoes
    them); each image's group is flushed when written, a group left incomplete by an
    interruption is redone."""
    items = read_image_list(list_images)
    if shard is not None:
        items = shard.take(items)
    list_dir = Path(list_images).resolve().parent
    summary = RunSummary()
    t0 = time.time()
    with hloc_io.open_h5(h5_output_path(results_dir, network_version, shard), "a") as fd:
        have = set() if overwrite else set(hloc_io.complete_names(fd))
        bar = tqdm(items, desc=f"extract {network_version}", unit="img", disable=not progress)
        for item in bar:
            name = item.lstrip("/\\")
            if name in have:
                summary.skipped.append(item)
                continue
            try:
                f = extractor.features(locate_image(item, list_dir, data_dir))
            except (ImageReadError, ImageTooSmallError) as e:
                summary.failed.append((item, str(e)))
                bar.write(f"[ERROR] {e}")
                continue
            hloc_io.write_features(fd, name, f.keypoints, f.descriptors, f.image_size, orientations=f.orientations,
                                   lafs=None if f.shapes is None else f.lafs()[0].numpy())
            fd.flush()
            summary.written.append(item)
            bar.set_postfix(points=len(f.keypoints), refresh=False)
    summary.seconds = time.time() - t0
    return summary
