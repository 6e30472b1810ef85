"""The descriptor slot: the interfaces of the parts an :class:`~keynet.pipeline.extraction.Extractor`
composes, and the registry of named descriptors (HardNet the default, RootSIFT registered).

An :class:`Extractor` composes, on the keypoints of the detector, an optional
:class:`ShapeEstimator` (the affine shape of each region), an optional
:class:`OrientationModel` (each region's orientation) and an optional :class:`Descriptor`
(one row per keypoint). Any object with these methods fits: HardNet
(:class:`hardnet.HardNetDescriptor`), OriNet and the gradient rule
(:class:`hardnet.OrientationEstimator`), AffNet and the moments
(:class:`hardnet.affnet.AffineShapeEstimator`), the kornia peers of the benchmarks, and
:class:`RootSIFTDescriptor` below. ``shapes`` is passed to the orientation and the descriptor
only when the extractor has a shape estimator, so a part that takes no shapes needs no
``shapes`` argument.

``--descriptor`` (``FeatureConfig.descriptor``) takes a HardNet weights file, ``default``
(the shipped HardNet), ``none``, or a name of :data:`DESCRIPTORS`. A second descriptor is
one :func:`register_descriptor` call (docs/architecture.md shows RootSIFT as the example).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Protocol, Union

import cv2
import numpy as np
import torch

#: A torch device, its name, or ``None`` (automatic).
Device = Optional[Union[str, torch.device]]


class Descriptor(Protocol):
    """Describes keypoints: ``(N, D)`` float32, one row per keypoint, in order."""

    def describe(self, image: np.ndarray, kpts: np.ndarray, orientations: Optional[np.ndarray] = None,
                 shapes: Optional[np.ndarray] = None) -> np.ndarray:
        """``image``: (H, W) float grey (the detector's prepared image, divided by its max);
        ``kpts``: (N, >=3) x, y, scale; ``orientations``: (N,) degrees (image coordinates,
        OpenCV's ``KeyPoint.angle`` convention) or None (upright); ``shapes``: (N, 2, 2)
        affine shapes (:mod:`hardnet.affnet`), given only by an extractor with a shape estimator."""


class OrientationModel(Protocol):
    """Estimates the orientation of keypoints: ``(N,)`` float32 degrees."""

    def estimate(self, image: np.ndarray, kpts: np.ndarray, shapes: Optional[np.ndarray] = None) -> np.ndarray:
        """As :meth:`Descriptor.describe`; ``shapes`` given only with a shape estimator."""


class ShapeEstimator(Protocol):
    """Estimates the affine shape of keypoints' regions: ``(N, 2, 2)`` float32 (lower
    triangular, determinant 1; :mod:`hardnet.affnet`)."""

    def estimate(self, image: np.ndarray, kpts: np.ndarray) -> np.ndarray:
        """``image`` and ``kpts`` as :meth:`Descriptor.describe`."""


@dataclass(frozen=True)
class DescriptorEntry:
    """A named descriptor: ``load(device)`` builds it; ``help`` says what it is (``--descriptor``'s
    help); ``tag()`` names what its output depends on besides the name (benchmark cache keys)."""

    name: str
    load: Callable[[Device], Descriptor]
    help: str
    tag: Callable[[], str]


#: name -> :class:`DescriptorEntry`: the descriptors ``--descriptor`` takes by name (besides
#: ``default``, ``none`` and HardNet weights files).
DESCRIPTORS: Dict[str, DescriptorEntry] = {}


def register_descriptor(entry: DescriptorEntry) -> DescriptorEntry:
    """Add ``entry`` to :data:`DESCRIPTORS` (a new name, not ``default`` / ``none``); returns it."""
    if entry.name in DESCRIPTORS or entry.name in ("default", "none"):
        raise ValueError(f"a descriptor named {entry.name!r} is registered already")
    DESCRIPTORS[entry.name] = entry
    return entry


def named_descriptor(spec: Optional[Union[str, os.PathLike]]) -> Optional[DescriptorEntry]:
    """The registered entry of ``spec`` when it names one, else ``None`` (a weights file, ...)."""
    return DESCRIPTORS.get(str(spec)) if spec is not None else None


# ----------------------------------------------------------------------------- RootSIFT
#: OpenCV SIFT's descriptor window is about 6 x ``KeyPoint.size`` wide (4 cells of
#: 3 * size / 2 px): the size of a keypoint of scale s is ``SIFT_SIZE_PER_SCALE * s`` so that
#: SIFT describes the 64 * s px support of the HardNet patch (benchmarks/hardnet_vs_sift.py).
SIFT_WIDTH_PER_SIZE = 6.0
HARDNET_SUPPORT_PER_SCALE = 64.0
SIFT_SIZE_PER_SCALE = HARDNET_SUPPORT_PER_SCALE / SIFT_WIDTH_PER_SIZE


def rootsift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then the square root (unit L2)."""
    d = np.asarray(desc, dtype=np.float32)
    d = d / np.maximum(np.abs(d).sum(axis=1, keepdims=True), eps)
    return np.sqrt(d).astype(np.float32)


class RootSIFTDescriptor:
    """RootSIFT descriptors computed by OpenCV at given keypoints: SIFT (``cv2.SIFT_create()
    .compute``) on the 8-bit image with ``KeyPoint.size = size_factor * scale`` and the
    keypoint's orientation as ``KeyPoint.angle`` (0 when upright), then :func:`rootsift`.
    Isotropic regions only (no affine shapes)."""

    def __init__(self, size_factor: float = SIFT_SIZE_PER_SCALE) -> None:
        self.size_factor = float(size_factor)

    def describe(self, image: np.ndarray, kpts: np.ndarray, orientations: Optional[np.ndarray] = None,
                 shapes: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, 128) float32 RootSIFT of ``kpts`` ((N, >=3) x, y, scale) on ``image`` (grey,
        float in [0, 1] as the detector prepares it, or uint8)."""
        if shapes is not None:
            raise ValueError("the rootsift descriptor describes isotropic regions: use --affine none")
        n = len(kpts)
        if n == 0:
            return np.zeros((0, 128), np.float32)
        if orientations is not None and len(orientations) != n:
            raise ValueError(f"{len(orientations)} orientations for {n} keypoints")
        img = np.asarray(image)
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        angles = np.zeros(n) if orientations is None else np.asarray(orientations, np.float64)
        kps = [cv2.KeyPoint(float(x), float(y), float(self.size_factor * s), float(a))
               for (x, y, s), a in zip(np.asarray(kpts, np.float64)[:, :3], angles)]
        out_kps, desc = cv2.SIFT_create().compute(img, kps)
        if desc is None or len(out_kps) != n:
            raise RuntimeError(f"OpenCV SIFT returned {0 if desc is None else len(out_kps)} of {n} descriptors")
        if not np.allclose([k.pt for k in out_kps], np.asarray(kpts, np.float64)[:, :2], atol=1e-3):
            raise RuntimeError("OpenCV SIFT reordered the keypoints")
        return rootsift(desc)


register_descriptor(DescriptorEntry(
    "rootsift", lambda device: RootSIFTDescriptor(),
    "'rootsift' (OpenCV RootSIFT at the keypoints, size 64/6 x scale: the HardNet patch's support)",
    lambda: f"opencv={cv2.__version__} size={SIFT_SIZE_PER_SCALE:g}"))


__all__ = ["DESCRIPTORS", "Descriptor", "DescriptorEntry", "OrientationModel", "RootSIFTDescriptor",
           "SIFT_SIZE_PER_SCALE", "ShapeEstimator", "named_descriptor", "register_descriptor", "rootsift"]
