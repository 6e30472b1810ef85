"""Describing keypoints of an image with HardNet, in bounded-memory chunks."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from .model import HardNet
from .patches import DEFAULT_MAGNIFICATION, extract_patches


class HardNetDescriptor:
    """Computes (N, 128) float32 HardNet descriptors at (x, y, scale) keypoints."""

    def __init__(self, model: HardNet, device: Optional[Union[str, torch.device]] = None,
                 batch_size: Optional[int] = None, magnification: float = DEFAULT_MAGNIFICATION) -> None:
        self.device = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.model = model.to(self.device).eval()
        # Patches per forward pass: memory stays bounded whatever the number of keypoints.
        # On the CPU 128 keeps a layer's activations (16 MB) in cache: ~20% faster than 512.
        if batch_size is None:
            batch_size = 128 if self.device.type == "cpu" else 2048
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.magnification = magnification

    @torch.no_grad()
    def describe(self, image: np.ndarray, kpts: np.ndarray) -> np.ndarray:
        """``image``: (H, W) float grey (full resolution); ``kpts``: (N, >=3) x, y, scale."""
        n = len(kpts)
        out = np.zeros((n, 128), dtype=np.float32)
        if n == 0:
            return out
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        k = torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)).to(self.device)
        layers = self.model.fused_layers() if self.model.fast else None
        for i in range(0, n, self.batch_size):
            patches = extract_patches(img, k[i:i + self.batch_size], magnification=self.magnification)
            out[i:i + len(patches)] = self.model(patches, layers).float().cpu().numpy()
        return out
