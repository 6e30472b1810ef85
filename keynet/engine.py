"""The Key.Net inference engine: computes the response of a :class:`~keynet.model.KeyNet`
for detection, faster than the network's own ``forward`` and with bounded memory, giving
the same values up to float rounding. The network definition (``keynet/model.py``) knows
nothing of it; the engine reads the network's weights.

:class:`EngineConfig` holds every switch (documented there); :class:`KeyNetEngine` applies
them. The fast path (default, eval-mode inference only):

* the hand-crafted block, internal-pyramid blur and local normalisation by OpenCV on the
  CPU (``use_opencv``), straight into channels-last memory;
* batch norm folded into the convolutions (cached until a weight or statistic changes),
  fused conv + ReLU, and on the CPU convolutions over horizontal pixel pairs
  (``pair_convs``, :class:`keynet.base.ops.PairConv`);
* the head as per-level 1xK convolutions summed row by row (no concatenation), the
  smaller levels interpolated along y after that convolution;
* horizontal strips of about ``strip_pixels`` output pixels with exact halos (bounded
  memory whatever the image size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keynet.base.ops import PairConv, bilinear_rows, bn_scale_shift, conv2d_act, lerp_rows

from .model import LOCAL_NORM_WINDOW, PT_CHANNELS, TF_CHANNELS, KeyNet, local_norm

MODES = ("fast", "plain", "reference")


@dataclass
class EngineConfig:
    """How the engine computes the response (every setting gives the same values up to
    float rounding)."""

    mode: str = field(default="fast", metadata={
        "choices": MODES,
        "help": "fast: the engine below; plain: the network's forward; reference: the TF computation "
                "literally (65x65 average pooling, Sobel convolutions, NCHW, whole image)"})
    pair_convs: bool = field(default=True, metadata={
        "help": "CPU: convolutions over horizontal pixel pairs (false: plain channels-last convolutions)"})
    use_opencv: bool = field(default=True, metadata={
        "help": "CPU: hand-crafted block, blur and local normalisation by OpenCV (false: the torch ops a GPU runs)"})
    strip_pixels: int = field(default=1 << 19, metadata={"help": "output pixels per strip (bounded memory)"})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"engine mode must be one of {MODES}, got {self.mode!r}")
        if self.strip_pixels < 1:
            raise ValueError(f"strip_pixels must be >= 1, got {self.strip_pixels}")


def gaussian_kernel_tf_1d(sigma: float = 1.5) -> np.ndarray:
    """The 1-D factor of :func:`gaussian_kernel_tf` (its outer product with itself is the
    2-D kernel): the fast path blurs separably."""
    r = 2 * sigma
    size = int(math.ceil(2 * r + 1))
    x = np.arange(0, size, 1, float)
    return np.float32(np.exp(-((x - r) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** 0.25)

def local_norm_cv2(x: np.ndarray, k: int = LOCAL_NORM_WINDOW, eps: float = 1e-10) -> np.ndarray:
    """:func:`local_norm` of one float32 ``(H, W)`` image with OpenCV box filters (running
    sums in float64 inside OpenCV, reflect-101 border = torch's ``reflect`` padding), the
    rest in float32 like the TF graph. The CPU fast path."""
    m = cv2.boxFilter(x, cv2.CV_32F, (k, k), borderType=cv2.BORDER_REFLECT_101)
    m2 = cv2.sqrBoxFilter(x, cv2.CV_32F, (k, k), borderType=cv2.BORDER_REFLECT_101)
    den = np.subtract(m2, np.square(m))
    np.sqrt(np.abs(den, out=den), out=den)
    den += np.float32(1.0 + eps)  # 1 + (std + eps)
    x = x - m
    return np.divide(x, den, out=x)

def normalise_cv2(variant: str, x: np.ndarray) -> np.ndarray:
    """The variant's input normalisation of one ``(H, W)`` image on the CPU: the local
    normalisation by OpenCV (``tf``, ``repro``), none for ``pt``. Float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x if variant == "pt" else local_norm_cv2(x)

def derivatives_cv2(variant: str, x: np.ndarray, even: bool = False) -> np.ndarray:
    """The ten channels of one float32 ``(H, W)`` image by OpenCV (Sobel filters and
    products), channels-last ``(H, W, 10)``: the layout the convolutions want.
    ``even``: for odd W, return ``W + 1`` columns, the last one zero (the layout of
    :class:`PairConv`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    pt = variant == "pt"
    w = x.shape[1]
    pad = even and w % 2 == 1
    if pad and not pt:
        # Zero-border Sobel: an explicit zero column changes nothing left of it, as long
        # as the first derivatives are zero there too before differentiating again.
        x = cv2.copyMakeBorder(x, 0, 0, 0, 1, cv2.BORDER_CONSTANT, value=0)
    border = cv2.BORDER_REPLICATE if pt else cv2.BORDER_CONSTANT
    scale = 0.125 if pt else 1.0

    def sobel(a: np.ndarray, ox: int, oy: int) -> np.ndarray:
        return cv2.Sobel(a, cv2.CV_32F, ox, oy, ksize=3, scale=scale, borderType=border)

    dx, dy = sobel(x, 1, 0), sobel(x, 0, 1)
    if pad and not pt:
        dx[:, w] = 0
        dy[:, w] = 0
    dxx, dxy, dyy = sobel(dx, 1, 0), sobel(dx, 0, 1), sobel(dy, 0, 1)
    ch = {
        "dx": dx, "dy": dy, "dxx": dxx, "dyy": dyy, "dxy": dxy,
        "dx2": dx * dx, "dy2": dy * dy, "dxdy": dx * dy, "dxxdyy": dxx * dyy, "dxy2": dxy * dxy,
    }
    out = cv2.merge([ch[k] for k in (PT_CHANNELS if pt else TF_CHANNELS)])
    if pad and pt:
        out = cv2.copyMakeBorder(out, 0, 0, 0, 1, cv2.BORDER_CONSTANT, value=0)
    elif pad:
        out[:, w] = 0
    return out

def blur_cv2(x: torch.Tensor) -> torch.Tensor:
    """The internal-pyramid blur (:func:`keynet.model.gaussian_kernel_tf`, zero border) of a
    ``(B, 1, H, W)`` CPU tensor by OpenCV's separable filter (~25x faster than the 7x7
    single-channel convolution; float rounding only)."""
    g = gaussian_kernel_tf_1d(1.5)
    planes = [cv2.sepFilter2D(np.ascontiguousarray(xb[0].numpy()), -1, g, g, borderType=cv2.BORDER_CONSTANT)
              for xb in x]
    return torch.from_numpy(np.stack(planes))[:, None]


class FastWeights(NamedTuple):
    """The inference weights of the fast path (:meth:`KeyNetEngine._fast_weights`)."""

    #: the learnable blocks, batch norms folded: PairConv layers, or (weight, bias, padding)
    convs: List[Any]
    #: per internal level, the head's 1xK convolutions (one output channel per kernel row)
    heads: List[Any]
    #: (K, K) response of the head batch norm's shift per kernel tap (None without a head BN)
    shift_taps: Optional[torch.Tensor]
    #: the head convolution's bias
    bias: torch.Tensor
    #: the head kernel size K
    kernel: int


class KeyNetEngine:
    """Response maps of ``model`` as configured by ``config`` (see the module doc).

    The fast path, step by step: :meth:`_fast_weights` (batch norms folded, cached:
    :meth:`_fold_learner`, :meth:`_fold_head`); :meth:`_normalised_levels` (each internal
    level's input and local normalisation, whole image); then per strip of rows
    (:meth:`_strip_rows`, :meth:`_strip_response`) each level's features
    (:meth:`_strip_features`: :meth:`_source_rows`, :meth:`_derivative_features`,
    :meth:`_learned_blocks`, :meth:`_upsample_x`) and the head (:meth:`_head_fast`:
    :meth:`_fuse_levels`, :meth:`_head_base`, :meth:`_add_row_taps`)."""

    def __init__(self, model: nn.Module, config: Optional[EngineConfig] = None) -> None:
        """``model``: a :class:`KeyNet` (any other module is simply called)."""
        self.model = model
        self.config = config or EngineConfig()
        self._fast_cache: Optional[Tuple[Any, FastWeights]] = None

    # ------------------------------------------------------------------ dispatch
    def supports_fast(self) -> bool:
        """The fast path covers the standard architecture (hand-crafted block and at least
        one learnable block); the ablation variants run the network's forward."""
        if not isinstance(self.model, KeyNet):
            return False
        c = self.model.config
        return c.handcrafted and c.num_blocks > 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` image -> ``(B, 1, H, W)`` response (as :meth:`KeyNet.forward`)."""
        if self.model.training:
            raise RuntimeError("KeyNetEngine runs eval-mode inference; call model.eval() first")
        if self.config.mode == "fast" and self.supports_fast():
            return self._forward_fast_checked(x)
        return self._forward_network(x)

    def _forward_network(self, x: torch.Tensor) -> torch.Tensor:
        """``mode`` reference (a :class:`KeyNet`): the TF computation literally; otherwise
        (plain, or a model the fast path does not cover): the network's forward."""
        if self.config.mode == "reference" and isinstance(self.model, KeyNet):
            return self.model.forward_reference(x)
        return self.model(x)

    def _forward_fast_checked(self, x: torch.Tensor) -> torch.Tensor:
        """The fast path on a checked float32 input, with the head's ReLU when configured."""
        self.model._check(x)
        out = self._forward_fast(x.float())
        return F.relu(out) if self.model.config.head_relu else out

    def _pairs(self, x: torch.Tensor) -> bool:
        """Whether the convolutions of ``x``'s device run over pixel pairs (CPU only)."""
        return x.device.type == "cpu" and self.config.pair_convs

    # ------------------------------------------------------------------ folded weights
    def _fast_weights(self, pairs: bool) -> FastWeights:
        """Inference weights of the fast path (batch norms folded, pair layout), cached
        until a parameter or buffer changes (:meth:`_weights_key`)."""
        key = self._weights_key(pairs)
        if self._fast_cache is not None and self._fast_cache[0] == key:
            return self._fast_cache[1]
        out = self._fold_weights(pairs)
        self._fast_cache = (key, out)
        return out

    def _weights_key(self, pairs: bool) -> Tuple[Any, ...]:
        """The cache key: the layout and every parameter's and buffer's storage and version
        counter."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return (pairs, tuple((t.data_ptr(), t._version) for t in tensors))

    def _fold_weights(self, pairs: bool) -> FastWeights:
        """:class:`FastWeights` from the model's current weights (uncached)."""
        layers = self._fold_learner()
        convs = [PairConv(wt, bb, relu=True) for wt, bb, _ in layers] if pairs else layers
        heads, shift_taps = self._fold_head(pairs)
        conv = self.model.head_conv
        return FastWeights(convs, heads, shift_taps, conv.bias, conv.kernel_size[0])

    def _fold_learner(self) -> List[Tuple[torch.Tensor, torch.Tensor, int]]:
        """The learnable blocks with each batch norm folded into its convolution (eval only):
        ``(weight (channels-last), bias, padding)`` per block."""
        fused = []
        for blk in self.model.learner:
            bn = blk.bn
            k, t = bn_scale_shift(bn)
            w = (blk.conv.weight * k[:, None, None, None]).contiguous(memory_format=torch.channels_last)
            b = blk.conv.bias * k + t
            fused.append((w, b, blk.conv.padding[0]))
        return fused

    def _fold_head(self, pairs: bool) -> Tuple[List[Any], Optional[torch.Tensor]]:
        """The head batch norm folded into the head convolution: per internal level the
        1xK convolution ``(K, C, 1, K)`` with the BN scale (one output channel per kernel
        row; a PairConv with ``pairs``), and the ``(K, K)`` response of the BN shift per
        kernel tap (``None`` without a head BN)."""
        wk = self.model.head_conv.weight[0]  # (C, k, k)
        shift = None
        if isinstance(self.model.head_bn, nn.BatchNorm2d):
            scale, shift = bn_scale_shift(self.model.head_bn)
            wk_s = wk * scale[:, None, None]
        else:
            wk_s = wk
        nf = self.model.config.num_filters
        heads = []
        for lvl in range(self.model.config.num_levels):
            # (k, C, 1, k): a 1xk convolution with one output channel per kernel row
            wl = wk_s[lvl * nf:(lvl + 1) * nf].permute(1, 0, 2)[:, :, None, :]
            heads.append(PairConv(wl, None, relu=False) if pairs
                         else wl.contiguous(memory_format=torch.channels_last))
        shift_taps = (wk * shift[:, None, None]).sum(0) if shift is not None else None  # shift response per tap
        return heads, shift_taps

    # ------------------------------------------------------------------ fast forward, in strips
    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Inference in horizontal strips of about ``strip_pixels`` output pixels.

        Per internal level the (cheap, one-channel) input and its local normalisation are
        computed for the whole image once; the ten derivative channels, the learnable
        blocks, the up-sampling and the head then run strip by strip, each strip with the
        few extra rows its filters read (2 for the Sobel pair, K//2 per convolution), so
        every output row is computed exactly as on the whole image. The working set stays
        a few tens of MB whatever the image size (no multi-GB feature maps, no page-fault
        storm from allocating them) and stays in cache."""
        b, _, h, w = x.shape
        pairs = self._pairs(x)
        weights = self._fast_weights(pairs)
        normed = self._normalised_levels(x)
        rh = self.model.head_conv.kernel_size[0] // 2
        out = x.new_empty((b, 1, h, w))
        for a0, a1 in self._strip_rows(h, w):
            f0, f1 = max(0, a0 - rh), min(h, a1 + rh)  # feature rows the head reads
            o = self._strip_response(normed, weights, f0, f1, h, w, pairs)
            out[:, :, a0:a1] = o[:, :, a0 - f0:a1 - f0]
        return out

    def _normalised_levels(self, x: torch.Tensor) -> List[Any]:
        """Each internal level's input, normalised (:func:`local_norm`; none for ``pt``),
        whole image: ``(B, H_l, W_l)`` float32 arrays by OpenCV on the CPU
        (``use_opencv``), else ``(B, 1, H_l, W_l)`` tensors by torch."""
        cfg = self.model.config
        cpu = x.device.type == "cpu" and self.config.use_opencv
        smooth = blur_cv2(x) if cpu and cfg.num_levels > 1 and cfg.variant != "pt" else None
        normed = []
        for xi in self.model.level_inputs(x, smooth=smooth):
            if cpu:
                normed.append(np.stack([normalise_cv2(cfg.variant, xb[0].numpy()) for xb in xi]))
            else:
                normed.append(local_norm(xi) if cfg.variant != "pt" else xi)
        return normed

    def _strip_rows(self, h: int, w: int) -> List[Tuple[int, int]]:
        """The output rows ``[a0, a1)`` of each strip: about ``strip_pixels`` pixels, at
        least 8 rows."""
        rows = max(8, int(self.config.strip_pixels) // max(w, 1))
        return [(a0, min(h, a0 + rows)) for a0 in range(0, h, rows)]

    def _strip_response(self, normed: List[Any], weights: FastWeights, f0: int, f1: int, h: int, w: int,
                        pairs: bool) -> torch.Tensor:
        """The head's response ``(B, 1, f1 - f0, w)`` of feature rows ``[f0, f1)`` (exact
        away from the strip's edges inside the image)."""
        feats = [self._strip_features(n, weights.convs, f0, f1, h, w, pairs) for n in normed]
        return self._head_fast(feats, weights, w, row0=f0, height=h)

    # ------------------------------------------------------------------ one level's features
    def _strip_features(self, normed: Any, convs: List[Any], f0: int, f1: int, h: int, w: int, pairs: bool
                        ) -> Tuple[torch.Tensor, Optional[Tuple[torch.Tensor, ...]]]:
        """Features of one internal level for output rows [f0, f1), channels-last, at the
        input width (W, or W + 1 with pairs and odd W). Returns ``(features, rows)``: for
        the full-resolution level the features of rows [f0, f1) and ``None``; for a smaller
        level the features of its own source rows, up-sampled along x only, and the
        ``(r0, r1, lam)`` that interpolate them along y (:func:`~keynet.base.ops.lerp_rows`). The head
        applies that last step after its 1xK convolution, which acts along x only and so
        commutes with it: 5 channels to interpolate instead of 8, on fewer rows."""
        cfg = self.model.config
        hl, wl = normed.shape[-2:]
        s0, s1, interp = self._source_rows(hl, wl, f0, f1, h, w)
        halo = 2 + cfg.num_blocks * (cfg.kernel_size // 2)  # Sobel pair + convolutions
        c0, c1 = max(0, s0 - halo), min(hl, s1 + halo)
        f = self._derivative_features(normed, c0, c1, pairs)
        f = self._learned_blocks(f, convs, wl, pairs)
        f = f[:, :, s0 - c0:s1 - c0]
        if interp is None:
            return f, None
        return self._upsample_x(f, wl, w, pairs), interp

    def _source_rows(self, hl: int, wl: int, f0: int, f1: int, h: int, w: int
                     ) -> Tuple[int, int, Optional[Tuple[torch.Tensor, ...]]]:
        """The rows ``[s0, s1)`` of an ``(hl, wl)`` level that output rows ``[f0, f1)`` of an
        ``(h, w)`` image read, and ``(r0, r1, lam)`` (relative to ``s0``) interpolating them
        along y; ``None`` for the full-resolution level (the same rows)."""
        if hl == h and wl == w:
            return f0, f1, None
        i0, i1, lam = bilinear_rows(hl, h, f0, f1, self.model.config.variant != "pt")
        s0, s1 = int(i0.min()), int(i1.max()) + 1
        return s0, s1, (i0 - s0, i1 - s0, lam)

    def _derivative_features(self, normed: Any, c0: int, c1: int, pairs: bool) -> torch.Tensor:
        """The ten derivative channels of rows ``[c0, c1)`` of one normalised level,
        ``(B, 10, c1 - c0, W_l)`` channels-last: by OpenCV from an array
        (:func:`derivatives_cv2`, one extra zero column for pairs and odd width), by the
        model's hand-crafted block from a tensor."""
        cfg = self.model.config
        if isinstance(normed, np.ndarray):
            hc = [derivatives_cv2(cfg.variant, nb[c0:c1], even=pairs) for nb in normed]
            return torch.from_numpy(hc[0][None] if len(hc) == 1 else np.stack(hc)).permute(0, 3, 1, 2)
        f = self.model.handcrafted.derivatives(normed[..., c0:c1, :])
        return f.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def _learned_blocks(f: torch.Tensor, convs: List[Any], wl: int, pairs: bool) -> torch.Tensor:
        """The learnable blocks (folded conv + ReLU) on ``f``; ``wl``: the level's true width
        (pairs)."""
        for layer in convs:
            if pairs:
                f = layer(f, wl)
            else:
                wt, bb, pad = layer
                f = conv2d_act(f, wt, bb, (pad, pad), relu=True)
        return f

    def _upsample_x(self, f: torch.Tensor, wl: int, w: int, pairs: bool) -> torch.Tensor:
        """A smaller level's features (true width ``wl``; one more zero column with pairs
        and odd ``wl``) up-sampled along x to width ``w`` by F.interpolate with the rows
        unchanged (exact along y), plus one zero column for pairs and odd ``w``."""
        up = F.interpolate(f[..., :wl], size=(f.shape[-2], w), mode="bilinear",
                           align_corners=self.model.config.variant != "pt")
        if pairs and w % 2:
            up = F.pad(up.permute(0, 2, 3, 1), (0, 0, 0, 1)).permute(0, 3, 1, 2)
        return up

    # ------------------------------------------------------------------ the head
    def _head_fast(self, feats: List[Tuple[torch.Tensor, Any]], weights: FastWeights, width: int,
                   row0: int = 0, height: Optional[int] = None) -> torch.Tensor:
        """Head BN + KxK convolution to one channel without concatenating the levels: per
        level one C->K convolution with a 1xK kernel gives, for each kernel row dy, the row
        response (:meth:`_fuse_levels`); the K rows are then summed at their vertical
        offsets (:meth:`_add_row_taps`). oneDNN runs a C->1 KxK convolution at a few GFLOP/s
        and the concatenation is a full extra pass; this is faster. The BN scale folds into
        the weights; its shift, which the convolution's zero padding does not see at the
        border, is added as the exact rank-K map ``R K C^T`` (R, C: which kernel
        rows/columns fall inside the image; :meth:`_head_base`). ``feats``: the
        ``(features, rows)`` of :meth:`_strip_features` per level; ``weights``: the weights of
        :meth:`_fast_weights`. ``width``: the true width (the features may carry one extra
        zero column, see :class:`PairConv`); ``row0``, ``height``: where the rows of
        ``feats`` lie in an image of ``height`` rows (a strip; rows within K//2 of a strip
        edge inside the image are not exact). Returns ``(B, 1, rows, width)``."""
        full = next(f for f, interp in feats if interp is None)
        h = full.shape[2]
        height = h if height is None else height
        g = self._fuse_levels(feats, weights.heads, width, weights.kernel // 2, self._pairs(full))
        out = self._head_base(g, weights, width, row0, height)
        self._add_row_taps(out, g)
        return out[:, None, :, :width]

    @staticmethod
    def _fuse_levels(feats: List[Tuple[torch.Tensor, Any]], heads: List[Any], width: int, r: int,
                     pairs: bool) -> torch.Tensor:
        """The multi-scale fusion: ``(B, K, H, Wp)``, the response of each kernel row dy
        summed over the levels, each level's 1xK convolution followed by its interpolation
        along y (smaller levels)."""
        rows_per_tap = None
        for (f, interp), head in zip(feats, heads):
            if pairs:
                level_rows = head(f, width)
            else:
                level_rows = conv2d_act(f, head, None, (0, r), relu=False)
            if interp is not None:  # bilinear along y, after the x-only convolution
                level_rows = torch.stack([lerp_rows(one.permute(1, 2, 0), *interp)
                                          for one in level_rows]).permute(0, 3, 1, 2)
            rows_per_tap = level_rows if rows_per_tap is None else rows_per_tap.add_(level_rows)
        return rows_per_tap

    @staticmethod
    def _head_base(g: torch.Tensor, weights: FastWeights, width: int, row0: int, height: int) -> torch.Tensor:
        """``(B, H, Wp)``: the centre kernel row's response plus the bias and, with a head
        BN, the exact border-aware map of its shift (rows ``row0 ..`` of ``height``, columns
        of ``width``)."""
        b, k, h, wp = g.shape
        r = k // 2
        dev, dt = g.device, g.dtype
        bias, shift_taps = weights.bias, weights.shift_taps
        if shift_taps is None:
            return g[:, r] + bias
        ys = row0 + torch.arange(h, device=dev)[:, None] + torch.arange(k, device=dev) - r
        xs = torch.arange(wp, device=dev)[:, None] + torch.arange(k, device=dev) - r
        rows = ((ys >= 0) & (ys < height)).to(dt)
        cols = ((xs >= 0) & (xs < width)).to(dt)
        out = torch.addmm(bias.to(dt), rows @ shift_taps, cols.t())  # (H, Wp)
        return out.expand(b, h, wp) + g[:, r]

    @staticmethod
    def _add_row_taps(out: torch.Tensor, g: torch.Tensor) -> None:
        """Adds, in place, each off-centre kernel row dy's response ``g[:, dy]`` to ``out``
        at its vertical offset ``dy - K//2``."""
        k, h = g.shape[1], g.shape[2]
        r = k // 2
        for dy in range(k):
            s = dy - r
            if s > 0:
                out[:, : h - s] += g[:, dy, s:]
            elif s < 0:
                out[:, -s:] += g[:, dy, : h + s]
