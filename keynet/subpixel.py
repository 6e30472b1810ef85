"""Deprecated: sub-pixel keypoints are a setting of detection now,
``DetectorSettings(subpixel=True)`` (``keynet.load_detector(..., subpixel=True)``), computed
in the same pass over the pyramid. The functions live in :mod:`keynet.detection`;
:class:`SubpixelKeyNetDetector` still works and warns."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Optional, Union

import torch

from .detection import DetectorSettings, KeyNetDetector, refine_points, subpixel_offsets
from .engine import EngineConfig
from .model import KeyNet


class SubpixelKeyNetDetector(KeyNetDetector):
    """Deprecated: a :class:`KeyNetDetector` with ``settings.subpixel = True``."""

    def __init__(self, model: KeyNet, settings: Optional[DetectorSettings] = None,
                 device: Optional[Union[str, torch.device]] = None, engine: Optional[EngineConfig] = None) -> None:
        warnings.warn("SubpixelKeyNetDetector is deprecated: use KeyNetDetector with DetectorSettings(subpixel=True) "
                      "(keynet.load_detector(..., subpixel=True))", DeprecationWarning, stacklevel=2)
        super().__init__(model, dataclasses.replace(settings or DetectorSettings(), subpixel=True), device, engine)

    @classmethod
    def from_detector(cls, det: KeyNetDetector) -> "SubpixelKeyNetDetector":
        """The same model, settings (sub-pixel on), device and inference engine as ``det``."""
        out = cls(det.model, det.settings, device=det.device)
        out.engine = det.engine
        return out


__all__ = ["DetectorSettings", "SubpixelKeyNetDetector", "refine_points", "subpixel_offsets"]
