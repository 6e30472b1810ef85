"""Fast CPU convolution primitives shared by Key.Net and HardNet inference: a convolution
with the ReLU fused (one oneDNN call) and :class:`PairConv` (convolution on horizontal
pixel pairs, for layers with few output channels)."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F


_POINTWISE_OK: List[bool] = []


def conv2d_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: Tuple[int, int],
               relu: bool, stride: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """2-D convolution optionally followed by ReLU. On the CPU one oneDNN call
    with the ReLU fused (``mkldnn._convolution_pointwise``, the op torch.compile uses) when
    this torch build has it; otherwise ``F.conv2d`` + in-place ReLU (same values)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _POINTWISE_OK != [False]:
        try:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, w, b, list(padding), list(stride), [1, 1], 1, "relu" if relu else "none", [], "")
            if not _POINTWISE_OK:
                _POINTWISE_OK.append(True)
            return y
        except (AttributeError, RuntimeError):
            _POINTWISE_OK[:] = [False]
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    return F.relu_(y) if relu else y


class PairConv:
    """A stride-1 zero-padded convolution evaluated on pairs of horizontally adjacent pixels.

    Space-to-depth by 2 along x is free in the channels-last layout (a reshape): an I->O
    convolution with a kh x kw kernel becomes 2I->2O with kh x (2 ceil(r/2) + 1) taps
    (r = kw // 2), the taps that fall outside the original kernel being zeros. oneDNN's AVX2
    kernels load one weight vector per multiply-add for 8 output channels, two for 16, so
    Key.Net's 8-channel 5x5 layers run ~1.5-2x faster on pairs, with the same values (the
    extra taps add exact zeros). Inputs are channels-last ``(B, I, H, Wp)`` with ``Wp``
    even; when the true width W is odd the column W must be zero, and it is zeroed again in
    the output so that layers can be chained."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> None:
        o, i, kh, kw = weight.shape
        r = kw // 2
        xm = (r + 1) // 2
        w2 = weight.new_zeros(2 * o, 2 * i, kh, 2 * xm + 1)
        for j in range(2):  # output pixel within the pair
            for ii in range(2):  # input pixel within the pair
                for xo in range(-xm, xm + 1):  # pair offset
                    dx = 2 * xo + ii - j
                    if -r <= dx <= r:
                        w2[j * o:(j + 1) * o, ii * i:(ii + 1) * i, :, xo + xm] = weight[:, :, :, dx + r]
        self.weight = w2.contiguous(memory_format=torch.channels_last)
        self.bias = None if bias is None else bias.repeat(2)
        self.padding = (kh // 2, xm)
        self.relu = relu
        self.out_channels = o

    def __call__(self, x: torch.Tensor, width: int) -> torch.Tensor:
        b, c, h, wp = x.shape
        if wp % 2:
            raise ValueError(f"PairConv needs an even width, got {wp}")
        xs = x.permute(0, 2, 3, 1).reshape(b, h, wp // 2, 2 * c).permute(0, 3, 1, 2)
        y = conv2d_act(xs, self.weight, self.bias, self.padding, self.relu)
        y = y.permute(0, 2, 3, 1).reshape(b, h, wp, self.out_channels).permute(0, 3, 1, 2)
        if wp > width:
            y[..., width:] = 0
        return y
