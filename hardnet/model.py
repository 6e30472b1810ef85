"""The HardNet descriptor network (Mishchuk et al., NeurIPS 2017) in the official layout,
so that the state dict of the DagnyT/hardnet ``HardNet++.pth`` loads strictly. The network
only; fast inference is :class:`hardnet.descriptor.HardNetDescriptor`'s job."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



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

    @staticmethod
    def input_norm(x: torch.Tensor) -> torch.Tensor:
        """Per-patch standardisation (mean 0, std 1; unbiased std + 1e-7 as the original)."""
        flat = x.reshape(x.shape[0], -1)
        mp = flat.mean(1)
        sp = flat.std(1) + 1e-7
        return (x - mp[:, None, None, None].detach()) / sp[:, None, None, None].detach()

    @staticmethod
    def check(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1:] != (1, 32, 32):
            raise ValueError(f"HardNet expects (N, 1, 32, 32) patches, got {tuple(x.shape)}")

    @staticmethod
    def output(y: torch.Tensor) -> torch.Tensor:
        """The descriptors: the last feature map flattened and L2-normalised."""
        return F.normalize(y.reshape(y.shape[0], -1), p=2, dim=1, eps=1e-10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module-by-module computation (training, and the reference of
        :class:`hardnet.descriptor.HardNetDescriptor`'s fast path)."""
        self.check(x)
        return self.output(self.features(self.input_norm(x)))
