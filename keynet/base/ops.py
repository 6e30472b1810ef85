"""Fast inference primitives shared by Key.Net and HardNet: a convolution with the ReLU
fused (one oneDNN call), :class:`PairConv` (convolution on horizontal pixel pairs, for
layers with few output channels), and the exact row interpolation of a bilinear resize
(for resizing in strips)."""
from __future__ import annotations

import warnings
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def bn_scale_shift(bn: torch.nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as ``x * scale + shift`` per channel (for folding it into the
    neighbouring convolution; ``affine=False`` norms included)."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    return scale, shift


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


def bilinear_rows(n_in: int, n_out: int, r0: int, r1: int, align_corners: bool
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows and weights of output rows [r0, r1) of a bilinear resize from ``n_in``
    to ``n_out`` rows, in float32 exactly as ``F.interpolate`` (CPU) computes them."""
    y = np.arange(r0, r1, dtype=np.float32)
    if align_corners:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        src = scale * y
    else:
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.maximum(scale * (y + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = i0 + (i0 < n_in - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(lam)


def lerp_rows(x: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Rows ``(1 - lam) x[r0] + lam x[r1]`` of ``x`` (rows first, any trailing shape), as
    one sparse (two entries per row) times dense product: ~3x faster than gathering the
    rows, same values."""
    n, m = len(r0), x.shape[0]
    flat = x.reshape(m, -1)
    r0, r1, lam = r0.to(x.device), r1.to(x.device), lam.to(x.device)  # bilinear_rows' are on the CPU
    try:
        rows = torch.arange(n, device=x.device).repeat_interleave(2)
        cols = torch.stack([r0, r1], 1).reshape(-1)
        vals = torch.stack([1 - lam, lam], 1).reshape(-1).to(x.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            a = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, m)).coalesce()
            out = a.to_sparse_csr() @ flat
    except (RuntimeError, NotImplementedError):  # no sparse kernels here: gather the rows
        lam = lam.to(x.dtype)[:, None]
        out = flat[r0] * (1 - lam) + flat[r1] * lam
    return out.reshape(n, *x.shape[1:])
