"""Feature extraction: Key.Net keypoints + HardNet descriptors for one image (Python API)
and for an image list (the work behind ``extract_multiscale_features.py``)."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .detection import DetectorSettings, ImageTooSmallError, KeyNetDetector
from kpcore.files import atomic_save_npy, feature_paths, read_image_list
from kpcore.images import ImageReadError
from .weights import WeightsError, load_keynet

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = ROOT / "pretrained_nets"
DEFAULT_DETECTOR = PRETRAINED_DIR / "keynet.pt"
DEFAULT_DESCRIPTOR = PRETRAINED_DIR / "hardnet.pt"


def resolve_detector_weights(path_or_name: Optional[Union[str, os.PathLike]]) -> Path:
    """``None``/``'default'`` -> the shipped ``pretrained_nets/keynet.pt``; else the given path."""
    if path_or_name is None or str(path_or_name) in ("default", "keynet"):
        if not DEFAULT_DETECTOR.is_file():
            raise WeightsError(
                f"no shipped Key.Net weights at {DEFAULT_DETECTOR} yet (they are produced by train.py). "
                "Pass a weights file with --checkpoint-det-dir, e.g. the official TF weights as .npz "
                "(keynet_tf_official.npz), the authors' keynet_pytorch.pth or a checkpoint from train.py")
        return DEFAULT_DETECTOR
    return Path(path_or_name)


def load_detector(path_or_name: Optional[Union[str, os.PathLike]] = None,
                  device: Optional[Union[str, torch.device]] = None, **settings) -> KeyNetDetector:
    """Load Key.Net weights (any supported format, or ``'default'`` for the shipped ones) into
    a multi-scale :class:`KeyNetDetector`. Keyword arguments are :class:`DetectorSettings`."""
    model, _ = load_keynet(resolve_detector_weights(path_or_name))
    return KeyNetDetector(model, DetectorSettings(**settings), device=device)


def load_descriptor(path_or_name: Optional[Union[str, os.PathLike]] = "default",
                    device: Optional[Union[str, torch.device]] = None):
    """HardNet descriptor from a weights file; ``'default'`` -> ``pretrained_nets/hardnet.pt``
    if present, else ``None``; ``None``/``'none'`` -> ``None`` (no descriptors)."""
    from hardnet import HardNetDescriptor, load_hardnet

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

    def extract(self, image) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Image (path or array) -> ``(keypoints (N, 4) x, y, scale, score; descriptors (N, 128)
        or None when no descriptor is loaded)``."""
        img = self.detector.prepare(image)
        kpts = self.detector.detect_prepared(img)
        desc = self.descriptor.describe(img, kpts) if self.descriptor is not None else None
        return kpts, desc


@functools.lru_cache(maxsize=4)
def _shipped_extractor(descriptor: str) -> "Extractor":
    return Extractor(load_detector(), load_descriptor(descriptor))


def extract(image, detector: Optional[KeyNetDetector] = None, descriptor="default"
            ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One-call API: ``kpts, desc = keynet.extract(image)``.

    ``detector``: a :class:`KeyNetDetector` (default: the shipped weights, loaded once and
    cached); ``descriptor``: a HardNet weights path, ``'default'`` (shipped), ``'none'``, or
    a ready :class:`hardnet.HardNetDescriptor`.
    """
    spec = descriptor is None or isinstance(descriptor, (str, os.PathLike))
    if detector is None and spec:
        return _shipped_extractor(str(descriptor)).extract(image)
    det = detector or load_detector()
    desc = load_descriptor(descriptor) if spec else descriptor
    return Extractor(det, desc).extract(image)


@dataclass
class RunSummary:
    """What a batch extraction did."""

    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _locate(item: str, list_dir: Path, data_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    if data_dir is not None:
        from .benchmark.hsequences import resolve_image_path

        return resolve_image_path(item, data_dir)
    p = Path(item)
    if p.is_absolute() or p.exists():
        return p
    alt = list_dir / p
    return alt if alt.exists() else p


def run_extraction(list_images: Union[str, os.PathLike], results_dir: Union[str, os.PathLike],
                   network_version: str, extractor: Extractor, overwrite: bool = False,
                   order_coord: str = "xysr", progress: bool = True,
                   data_dir: Optional[Union[str, os.PathLike]] = None) -> RunSummary:
    """Extract features for every image of a list into the official layout
    ``<results_dir>/<network_version>/<image path>.{kpt,dsc}.npy``.

    Existing outputs are skipped unless ``overwrite``; a failing image is recorded and the
    rest processed; every file is written atomically. ``data_dir``: where the images are
    when the list uses the official ``hpatches-sequences-release/<seq>/<k>.ppm`` lines (the
    leading folder is replaced by ``data_dir``; the output layout keeps the line as written).
    """
    from tqdm import tqdm

    if order_coord not in ("xysr", "yxsr"):
        raise ValueError(f"order_coord must be 'xysr' or 'yxsr', got {order_coord!r}")
    items = read_image_list(list_images)
    list_dir = Path(list_images).resolve().parent
    summary = RunSummary()
    t0 = time.time()
    want_desc = extractor.descriptor is not None
    bar = tqdm(items, desc=f"extract {network_version}", unit="img", disable=not progress)
    for item in bar:
        kpt_path, dsc_path = feature_paths(results_dir, network_version, item)
        if not overwrite and kpt_path.exists() and (dsc_path.exists() or not want_desc):
            summary.skipped.append(item)
            continue
        try:
            kpts, desc = extractor.extract(_locate(item, list_dir, data_dir))
        except (ImageReadError, ImageTooSmallError) as e:
            summary.failed.append((item, str(e)))
            bar.write(f"[ERROR] {e}")
            continue
        out = kpts if order_coord == "xysr" else kpts[:, [1, 0, 2, 3]]
        if desc is not None:
            atomic_save_npy(dsc_path, desc)
        elif dsc_path.exists():
            dsc_path.unlink()  # a stale descriptor file would no longer match the keypoints
        atomic_save_npy(kpt_path, out)
        summary.written.append(item)
        bar.set_postfix(points=len(kpts))
    summary.seconds = time.time() - t0
    return summary
