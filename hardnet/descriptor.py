"""Describing keypoints of an image with HardNet, in bounded-memory chunks."""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keynet.base.device import resolve_device
from keynet.base.ops import bn_scale_shift, conv2d_act

from .model import HardNet
from .patches import DEFAULT_MAGNIFICATION, extract_patches


class FusedConv(NamedTuple):
    """One inference layer: convolution with its batch norm folded in, optional ReLU."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    relu: bool


def fused_layers(model: HardNet) -> List[FusedConv]:
    """The convolutions with their (eval-mode) batch norms folded in."""
    mods = list(model.features)
    layers = []
    for i, mod in enumerate(mods):
        if not isinstance(mod, nn.Conv2d):
            continue
        bn = mods[i + 1]
        scale, b = bn_scale_shift(bn)
        w = mod.weight * scale[:, None, None, None]
        relu = i + 2 < len(mods) and isinstance(mods[i + 2], nn.ReLU)
        layers.append(FusedConv(w.contiguous(memory_format=torch.channels_last), b,
                                tuple(mod.stride), tuple(mod.padding), relu))
    return layers


def forward_fused(x: torch.Tensor, layers: List[FusedConv]) -> torch.Tensor:
    """The feature map of standardised patches ``x`` through :func:`fused_layers`: batch norm
    folded, channels-last, ReLU fused, the 1-channel first layer as a 9-tap matmul (same
    values as the modules to float rounding)."""
    first = layers[0]
    if x.device.type == "cpu" and first.weight.shape[1] == 1 and first.stride == (1, 1):
        # 1-channel input: oneDNN runs it at a few GFLOP/s; as a (N*H*W, 9) x (9, C)
        # matmul it lands directly in the channels-last layout of the next layer.
        k, p = first.weight.shape[-1], first.padding[0]
        n, _, h, w = x.shape
        xp = F.pad(x[:, 0], (p, p, p, p))
        cols = torch.stack([xp[:, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)], -1)
        y = torch.addmm(first.bias, cols.reshape(-1, k * k), first.weight.reshape(-1, k * k).t())
        if first.relu:
            y.relu_()
        x = y.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        rest = layers[1:]
    else:
        x = x.contiguous(memory_format=torch.channels_last)
        rest = layers
    for layer in rest:
        x = conv2d_act(x, layer.weight, layer.bias, layer.padding, layer.relu, layer.stride)
    return x


class HardNetDescriptor:
    """Computes (N, 128) float32 HardNet descriptors at (x, y, scale) keypoints."""

    def __init__(self, model: HardNet, device: Optional[Union[str, torch.device]] = None,
                 batch_size: Optional[int] = None, magnification: float = DEFAULT_MAGNIFICATION,
                 fast: bool = True) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # Patches per forward pass: memory stays bounded whatever the number of keypoints.
        # On the CPU 128 keeps a layer's activations (16 MB) in cache: ~20% faster than 512.
        if batch_size is None:
            batch_size = 128 if self.device.type == "cpu" else 2048
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.magnification = magnification
        # fast: folded/fused inference layers (same values); False: the network's modules
        self.fast = bool(fast)

    @torch.no_grad()
    def describe_patches(self, patches: torch.Tensor, layers: Optional[List[FusedConv]] = None) -> torch.Tensor:
        """``(N, 1, 32, 32)`` patches -> ``(N, 128)`` descriptors (``layers``: the
        :func:`fused_layers` of the model, to reuse across chunks)."""
        if not self.fast:
            return self.model(patches)
        HardNet.check(patches)
        x = HardNet.input_norm(patches)
        return HardNet.output(forward_fused(x, layers or fused_layers(self.model)))

    @torch.no_grad()
    def describe(self, image: np.ndarray, kpts: np.ndarray, orientations: Optional[np.ndarray] = None,
                 shapes: Optional[np.ndarray] = None) -> np.ndarray:
        """``image``: (H, W) float grey (full resolution); ``kpts``: (N, >=3) x, y, scale;
        ``orientations``: optional (N,) degrees (project convention, see
        :mod:`hardnet.orientation`): each patch is cut rotated by its keypoint's angle
        (``None``: upright patches, the official behaviour); ``shapes``: optional (N, 2, 2)
        affine shapes (:mod:`hardnet.affnet`): the patch is cut through the full frame, shape
        first, then orientation."""
        n = len(kpts)
        out = np.zeros((n, 128), dtype=np.float32)
        if n == 0:
            return out
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        k = torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)).to(self.device)
        ori = None
        if orientations is not None:
            if len(orientations) != n:
                raise ValueError(f"{len(orientations)} orientations for {n} keypoints")
            ori = torch.from_numpy(np.deg2rad(np.asarray(orientations, dtype=np.float64)).astype(np.float32)
                                   ).to(self.device)
        shp = None
        if shapes is not None:
            if len(shapes) != n:
                raise ValueError(f"{len(shapes)} affine shapes for {n} keypoints")
            shp = torch.from_numpy(np.asarray(shapes, dtype=np.float32).reshape(n, 2, 2)).to(self.device)
        layers = fused_layers(self.model) if self.fast else None
        for i in range(0, n, self.batch_size):
            patches = extract_patches(img, k[i:i + self.batch_size], magnification=self.magnification,
                                      orientation=None if ori is None else ori[i:i + self.batch_size],
                                      shapes=None if shp is None else shp[i:i + self.batch_size])
            out[i:i + len(patches)] = self.describe_patches(patches, layers).float().cpu().numpy()
        return out
