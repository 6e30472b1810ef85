"""Feature extraction: Key.Net keypoints + HardNet descriptors for one image (Python API)
and for an image list (the work behind ``extract_multiscale_features.py``)."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from hardnet import HardNetDescriptor, load_hardnet
from pretrained_nets import WEIGHTS_DIR
from kpcore.files import locate_image, read_image_list
from kpcore.images import ImageReadError
from kpcore.runner import RunSummary, Shard, run_list

from .detection import DetectorSettings, ImageTooSmallError, KeyNetDetector
from .engine import EngineConfig
from .weights import WeightsError, load_keynet

PRETRAINED_DIR = WEIGHTS_DIR
DEFAULT_DETECTOR = PRETRAINED_DIR / "keynet.pt"
DEFAULT_DESCRIPTOR = PRETRAINED_DIR / "hardnet.pt"
DEFAULT_TINY = PRETRAINED_DIR / "tiny_keynet.pt"


def resolve_detector_weights(path_or_name: Optional[Union[str, os.PathLike]]) -> Path:
    """``None``/``'default'``/``'keynet'`` -> the shipped ``pretrained_nets/keynet.pt``;
    ``'tiny'`` -> the shipped Tiny-Key.Net ``pretrained_nets/tiny_keynet.pt``; else the given path."""
    if str(path_or_name) == "tiny":
        return DEFAULT_TINY
    if path_or_name is None or str(path_or_name) in ("default", "keynet"):
        if not DEFAULT_DETECTOR.is_file():
            raise WeightsError(
                f"no shipped Key.Net weights at {DEFAULT_DETECTOR} yet (they are produced by train.py). "
                "Pass a weights file with --checkpoint-det-dir, e.g. the official TF weights as .npz "
                "(keynet_tf_official.npz), the authors' keynet_pytorch.pth or a checkpoint from train.py")
        return DEFAULT_DETECTOR
    return Path(path_or_name)


def load_detector(path_or_name: Optional[Union[str, os.PathLike]] = None,
                  device: Optional[Union[str, torch.device]] = None, engine: Optional[EngineConfig] = None,
                  **settings) -> KeyNetDetector:
    """Load Key.Net weights (any supported format, or ``'default'`` for the shipped ones) into
    a multi-scale :class:`KeyNetDetector`. Keyword arguments are :class:`DetectorSettings`;
    ``engine``: the inference engine's switches (:class:`~keynet.engine.EngineConfig`)."""
    model, _ = load_keynet(resolve_detector_weights(path_or_name))
    return KeyNetDetector(model, DetectorSettings(**settings), device=device, engine=engine)


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


class Extractor:
    """Key.Net detector + (optional) HardNet descriptor."""

    def __init__(self, detector: KeyNetDetector, descriptor=None) -> None:
        self.detector = detector
        self.descriptor = descriptor

    def extract(self, image, channel_order: str = "rgb") -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Image (path or array) -> ``(keypoints (N, 4) x, y, scale, score; descriptors (N, 128)
        or None when no descriptor is loaded)``. ``channel_order``: of a colour array
        (``rgb``, or ``bgr`` for one from ``cv2.imread``)."""
        img = self.detector.prepare(image, channel_order)
        kpts = self.detector.detect_prepared(img)
        desc = self.descriptor.describe(img, kpts) if self.descriptor is not None else None
        return kpts, desc


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
    """
    items = read_image_list(list_images)
    if shard is not None:
        items = shard.take(items)
    list_dir = Path(list_images).resolve().parent
    return run_list(items, results_dir, network_version, extractor.extract,
                    lambda item: locate_image(item, list_dir, data_dir), overwrite=overwrite,
                    order_coord=order_coord, descriptors=extractor.descriptor is not None, progress=progress,
                    bad_input=(ImageReadError, ImageTooSmallError))
