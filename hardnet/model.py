"""The HardNet descriptor network (Mishchuk et al., NeurIPS 2017) in the official layout,
so that the state dict of the DagnyT/hardnet ``HardNet++.pth`` loads strictly."""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kpcore.ops import bn_scale_shift, conv2d_act


class FusedConv(NamedTuple):
    """One inference layer: convolution with its batch norm folded in, optional ReLU."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    relu: bool


class HardNet(nn.Module):
    """32x32 grey patch -> L2-normalised 128-d descriptor.

    Seven 3x3 conv layers (BN without affine, ReLU), dropout, then an 8x8 conv + BN;
    each patch is normalised by its own mean and standard deviation first. Module names
    (``features.0``, ``features.3``, ...) follow the official implementation.
    """

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(cout, affine=False), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 32), *block(32, 32), *block(32, 64, 2), *block(64, 64),
            *block(64, 128, 2), *block(128, 128),
            nn.Dropout(dropout),
            nn.Conv2d(128, 128, kernel_size=8, bias=False),
            nn.BatchNorm2d(128, affine=False),
        )
        # Inference fast path (eval mode, no autograd): batch norm folded into the
        # convolutions, channels-last, ReLU fused, first layer as a 9-tap matmul. Same
        # values to float rounding; False: the plain module-by-module computation.
        self.fast = True

    @staticmethod
    def input_norm(x: torch.Tensor) -> torch.Tensor:
        """Per-patch standardisation (mean 0, std 1; unbiased std + 1e-7 as the original)."""
        flat = x.reshape(x.shape[0], -1)
        mp = flat.mean(1)
        sp = flat.std(1) + 1e-7
        return (x - mp[:, None, None, None].detach()) / sp[:, None, None, None].detach()

    def fused_layers(self) -> List[FusedConv]:
        """The convolutions with their (eval-mode) batch norms folded in."""
        mods = list(self.features)
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

    def forward(self, x: torch.Tensor, layers: Optional[List[FusedConv]] = None) -> torch.Tensor:
        """``layers``: :meth:`fused_layers`, to reuse across chunks (fast path only)."""
        if x.dim() != 4 or x.shape[1:] != (1, 32, 32):
            raise ValueError(f"HardNet expects (N, 1, 32, 32) patches, got {tuple(x.shape)}")
        if self.fast and not self.training and not torch.is_grad_enabled():
            y = self._forward_fused(self.input_norm(x), layers or self.fused_layers())
        else:
            y = self.features(self.input_norm(x))
        return F.normalize(y.reshape(x.shape[0], -1), p=2, dim=1, eps=1e-10)

    @staticmethod
    def _forward_fused(x: torch.Tensor, layers: List[FusedConv]) -> torch.Tensor:
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
