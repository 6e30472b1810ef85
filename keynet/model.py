"""The Key.Net network: hand-crafted derivative block, shared learnable blocks over an
internal pyramid, and a head. One class covers the three published parameterisations:

- ``tf``    the official TensorFlow code (default): Sobel on the locally normalised image,
            7x7 Gaussian (unnormalised, sigma 1.5) + align-corners bilinear resize per
            internal level, BN(eps 1e-3) over the concatenated features + KxK conv head.
- ``repro`` the unofficial PyTorch reproduction: as ``tf`` but BN eps 1e-5 and a 1x1 head.
- ``pt``    the authors' later PyTorch port (kornia's ``KeyNet``): Sobel/8 with replicate
            padding, no local normalisation, cumulative ``pyrdown`` levels, no head BN,
            KxK conv + ReLU head.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpcore.ops import PairConv, bilinear_rows, bn_scale_shift, conv2d_act, lerp_rows

VARIANTS = ("tf", "repro", "pt")

# Order of the ten hand-crafted channels in each parameterisation.
TF_CHANNELS = ("dx", "dx2", "dxx", "dy", "dy2", "dyy", "dxdy", "dxxdyy", "dxy", "dxy2")
PT_CHANNELS = ("dx", "dy", "dx2", "dy2", "dxdy", "dxy", "dxy2", "dxx", "dyy", "dxxdyy")

LOCAL_NORM_WINDOW = 65


@dataclass
class KeyNetConfig:
    """Architecture of a Key.Net model (the original ``--num-filters``, ``--num-learnable-blocks``,
    ``--num-levels-within-net``, ``--factor-scaling-pyramid``, ``--conv-kernel-size``) plus the
    parameterisation ``variant`` (``tf``, ``repro`` or ``pt``)."""

    num_filters: int = field(default=8, metadata={"help": "filters per learnable block"})
    num_blocks: int = field(default=3, metadata={"flags": ("--num-learnable-blocks",),
                                                 "help": "learnable blocks (0: the head on the hand-crafted channels)"})
    num_levels: int = field(default=3, metadata={"flags": ("--num-levels-within-net",),
                                                 "help": "internal pyramid levels"})
    factor: float = field(default=1.2, metadata={"flags": ("--factor-scaling-pyramid",),
                                                 "help": "scale factor between internal levels"})
    kernel_size: int = field(default=5, metadata={"flags": ("--conv-kernel-size",), "help": "convolution size"})
    variant: str = field(default="tf", metadata={"choices": VARIANTS, "help": "parameterisation"})
    bn_momentum: float = field(default=0.01, metadata={"help": "batch-norm momentum (torch convention; TF decay 0.99)"})
    # Ablations of the paper (Sec. 5): ``handcrafted=False`` feeds the learnable blocks the
    # (locally normalised) image itself instead of the ten derivative channels ("learned
    # filters only"); ``num_blocks=0`` puts the head straight on the hand-crafted channels
    # ("hand-crafted filters only"). Both run the plain computation at inference.
    handcrafted: bool = field(default=True, metadata={
        "help": "false: the learnable blocks see the image itself, not the derivative channels (ablation)"})
    extra: Dict[str, Any] = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown Key.Net variant {self.variant!r}; expected one of {VARIANTS}")
        for name in ("num_filters", "num_levels", "kernel_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"KeyNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.num_blocks) < 0:
            raise ValueError(f"KeyNetConfig.num_blocks must be >= 0, got {self.num_blocks}")
        if self.num_blocks == 0 and not self.handcrafted:
            raise ValueError("KeyNetConfig: a network without hand-crafted block needs at least one learnable block")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"KeyNetConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.factor <= 1.0:
            raise ValueError(f"KeyNetConfig.factor must be > 1, got {self.factor}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "KeyNetConfig":
        """A named architecture: ``keynet`` (the paper's Key.Net: 3 blocks of 8 filters, 3
        internal levels) or ``tiny`` (the paper's Tiny-Key.Net: the hand-crafted block and
        one learnable block of a single filter, a few hundred parameters)."""
        if name not in PRESETS:
            raise ValueError(f"unknown Key.Net preset {name!r}; expected one of {tuple(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def in_channels(self) -> int:
        """Channels entering the first learnable block (or the head when there is none)."""
        return 10 if self.handcrafted else 1

    @property
    def level_channels(self) -> int:
        """Channels per internal level entering the head."""
        return self.num_filters if self.num_blocks > 0 else self.in_channels

    @property
    def bn_eps(self) -> float:
        return 1e-3 if self.variant == "tf" else 1e-5

    @property
    def head_kernel(self) -> int:
        return 1 if self.variant == "repro" else self.kernel_size

    @property
    def head_bn(self) -> bool:
        return self.variant != "pt"

    @property
    def head_relu(self) -> bool:
        return self.variant == "pt"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "KeyNetConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


PRESETS: Dict[str, Dict[str, Any]] = {
    "keynet": dict(num_filters=8, num_blocks=3, num_levels=3),
    "tiny": dict(num_filters=1, num_blocks=1, num_levels=3),
}


def gaussian_kernel_tf(sigma: float = 1.5) -> torch.Tensor:
    """The official internal-pyramid Gaussian: size ceil(4 sigma + 1), divided by
    sqrt(2 pi sigma^2) only (so it does NOT sum to one, as in the TF code)."""
    r = 2 * sigma
    size = int(math.ceil(2 * r + 1))
    x = np.arange(0, size, 1, float)
    y = x[:, None]
    g = np.exp(-((x - r) ** 2 + (y - r) ** 2) / (2 * sigma**2)) / ((2 * math.pi * sigma**2) ** 0.5)
    return torch.from_numpy(np.float32(g))[None, None]


def gaussian_kernel_tf_1d(sigma: float = 1.5) -> np.ndarray:
    """The 1-D factor of :func:`gaussian_kernel_tf` (its outer product with itself is the
    2-D kernel): the fast path blurs separably."""
    r = 2 * sigma
    size = int(math.ceil(2 * r + 1))
    x = np.arange(0, size, 1, float)
    return np.float32(np.exp(-((x - r) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** 0.25)


def tf_level_size(h: int, w: int, factor: float, level: int) -> Tuple[int, int]:
    """Internal level size of the TF graph: float32 multiplication by the reciprocal of the
    factor, then truncation (TF evaluates the division so; plain division differs by one
    pixel when the quotient is an integer, e.g. 600 / 1.2)."""
    r = np.float32(1.0) / np.float32(factor**level)
    return int(np.float32(h) * r), int(np.float32(w) * r)


def repro_level_size(h: int, w: int, factor: float, level: int) -> Tuple[int, int]:
    """Internal level size of the PyTorch reproduction: float64 division, then truncation."""
    return int(h / factor**level), int(w / factor**level)


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over every k x k window (valid positions only), separably through float64
    cumulative sums: O(1) per pixel whatever k, and closer to the exact mean than a
    float32 running sum."""
    c = F.pad(x.double().cumsum(-1), (1, 0))
    rows = c[..., k:] - c[..., :-k]
    c = F.pad(rows.cumsum(-2), (0, 0, 1, 0))
    return ((c[..., k:, :] - c[..., :-k, :]) / float(k * k)).to(x.dtype)


def _normalise(x: torch.Tensor, mean: torch.Tensor, mean2: torch.Tensor, eps: float) -> torch.Tensor:
    std = torch.sqrt(torch.abs(mean2 - mean * mean)) + eps
    return (x - mean) / (1.0 + std)


def local_norm(x: torch.Tensor, k: int = LOCAL_NORM_WINDOW, eps: float = 1e-10) -> torch.Tensor:
    """(x - mean) / (1 + std) over a k x k window with reflect padding (box sums by
    cumulative sums; equal to :func:`local_norm_reference` to ~1e-6)."""
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    both = box_mean(torch.cat([xp, xp * xp], 1), k)
    c = x.shape[1]
    return _normalise(x, both[:, :c], both[:, c:], eps)


def local_norm_reference(x: torch.Tensor, k: int = LOCAL_NORM_WINDOW, eps: float = 1e-10) -> torch.Tensor:
    """The plain computation of the TF code: k x k average pooling (k^2 additions per pixel)."""
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return _normalise(x, F.avg_pool2d(xp, k, stride=1), F.avg_pool2d(xp * xp, k, stride=1), eps)


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


class HandcraftedBlock(nn.Module):
    """The ten derivative channels (first and second order Sobel derivatives and products)."""

    def __init__(self, variant: str = "tf") -> None:
        super().__init__()
        self.variant = variant
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        k = torch.stack([sx, sx.t()])[:, None]  # (2,1,3,3): d/dx, d/dy
        self.register_buffer("sobel", k, persistent=False)

    def _grad(self, x: torch.Tensor, fast: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        if fast:
            return self._grad_separable(x)
        n, c, h, w = x.shape
        xr = x.reshape(n * c, 1, h, w)
        if self.variant == "pt":
            # kornia.filters.spatial_gradient: normalised Sobel, replicate border
            g = F.conv2d(F.pad(xr, (1, 1, 1, 1), mode="replicate"), self.sobel / 8.0)
        else:
            g = F.conv2d(xr, self.sobel, padding=1)  # TF 'SAME' = zero padding
        g = g.reshape(n, c, 2, h, w)
        return g[:, :, 0], g[:, :, 1]

    def _grad_separable(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The same Sobel derivatives as separable shifted differences and sums: a 1->2
        channel convolution is memory-bound in oneDNN, this is ~10x faster."""
        mode = "replicate" if self.variant == "pt" else "constant"
        xp = F.pad(x, (1, 1, 1, 1), mode=mode)
        d = xp[..., 2:] - xp[..., :-2]  # (H+2, W): horizontal difference
        dx = d[..., :-2, :] + 2 * d[..., 1:-1, :] + d[..., 2:, :]
        sm = xp[..., :-2] + 2 * xp[..., 1:-1] + xp[..., 2:]  # (H+2, W): horizontal smoothing
        dy = sm[..., 2:, :] - sm[..., :-2, :]
        if self.variant == "pt":
            dx, dy = dx / 8.0, dy / 8.0
        return dx, dy

    def forward(self, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
        if self.variant != "pt":
            x = local_norm(x) if fast else local_norm_reference(x)
        return self.derivatives(x, fast=fast)

    def normalise_cv2(self, x: np.ndarray) -> np.ndarray:
        """The variant's input normalisation of one ``(H, W)`` image on the CPU: the local
        normalisation by OpenCV (``tf``, ``repro``), none for ``pt``. Float32."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x if self.variant == "pt" else local_norm_cv2(x)

    def derivatives_cv2(self, x: np.ndarray, even: bool = False) -> np.ndarray:
        """The ten channels of one float32 ``(H, W)`` image by OpenCV (Sobel filters and
        products), channels-last ``(H, W, 10)``: the layout the convolutions want.
        ``even``: for odd W, return ``W + 1`` columns, the last one zero (the layout of
        :class:`PairConv`)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        pt = self.variant == "pt"
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

    def forward_cv2(self, x: np.ndarray, even: bool = False) -> np.ndarray:
        """:meth:`forward` of one ``(H, W)`` image on the CPU by OpenCV, channels-last."""
        return self.derivatives_cv2(self.normalise_cv2(x), even)

    def derivatives(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """The ten channels of ``x`` itself (no local normalisation), in the variant's order.
        ``fast``: separable Sobel (same values up to float rounding) instead of convolutions."""
        dx, dy = self._grad(x, fast)
        dxx, dxy = self._grad(dx, fast)
        _, dyy = self._grad(dy, fast)
        ch = {
            "dx": dx, "dy": dy, "dxx": dxx, "dyy": dyy, "dxy": dxy,
            "dx2": dx * dx, "dy2": dy * dy, "dxdy": dx * dy, "dxxdyy": dxx * dyy, "dxy2": dxy * dxy,
        }
        order = PT_CHANNELS if self.variant == "pt" else TF_CHANNELS
        return torch.cat([ch[k] for k in order], 1)


class ConvBlock(nn.Sequential):
    """Conv KxK + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, k: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)


class KeyNet(nn.Module):
    """Key.Net response network.

    Input: float32 ``(B, 1, H, W)`` grey image (the official code divides it by its maximum).
    Output: ``(B, 1, H, W)`` response; the ``tf``/``repro`` variants return it before the
    ReLU that the detector applies, ``pt`` ends with a ReLU.
    """

    def __init__(self, config: KeyNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or KeyNetConfig()
        self.handcrafted = HandcraftedBlock(cfg.variant)
        blocks: List[nn.Module] = []
        cin = cfg.in_channels
        for _ in range(cfg.num_blocks):
            blocks.append(ConvBlock(cin, cfg.num_filters, cfg.kernel_size, cfg.bn_eps, cfg.bn_momentum))
            cin = cfg.num_filters
        self.learner = nn.Sequential(*blocks)
        cat = cfg.level_channels * cfg.num_levels
        self.head_bn = nn.BatchNorm2d(cat, eps=cfg.bn_eps, momentum=cfg.bn_momentum) if cfg.head_bn else nn.Identity()
        self.head_conv = nn.Conv2d(cat, 1, cfg.head_kernel, padding=cfg.head_kernel // 2, bias=True)
        self.register_buffer("gauss", gaussian_kernel_tf(1.5), persistent=False)
        self._min_size = self._compute_min_size()
        # Fast path: cumulative-sum local normalisation (always), and at inference (eval
        # mode, no autograd) batch norm folded into the convolutions and channels-last
        # convolutions. False: the plain float32 NCHW computation of the TF code (65x65
        # average pooling, separate batch norm), the reference mode of the speed benchmark.
        self.fast = True
        # CPU fast path: convolutions on horizontal pixel pairs (PairConv), ~1.5-2x faster
        # in oneDNN, same values. False: plain channels-last convolutions.
        self.pair_convs = True
        # CPU fast path: the hand-crafted block, internal-pyramid blur and local
        # normalisation by OpenCV. False: the torch ops the GPU path uses.
        self.use_opencv = True
        # Fast path: output pixels per strip (bounded memory; see _forward_fast).
        self.strip_pixels = 1 << 19
        self._fast_cache: Optional[Tuple[Any, Dict[str, Any]]] = None

    # -- internal pyramid -------------------------------------------------------------
    def level_inputs(self, x: torch.Tensor, use_cv2: bool = False) -> List[torch.Tensor]:
        """The inputs of the learnable blocks at each internal pyramid level. ``use_cv2``
        (CPU fast path): the Gaussian blur as OpenCV's separable filter (same kernel, float
        rounding only) instead of a 7x7 single-channel convolution (~25x slower)."""
        cfg = self.config
        h, w = x.shape[-2:]
        out = [x]
        if cfg.variant == "pt":
            from kornia.geometry.transform import pyrdown

            cur = x
            for _ in range(1, cfg.num_levels):
                cur = pyrdown(cur, factor=cfg.factor)
                out.append(cur)
            return out
        size_fn = tf_level_size if cfg.variant == "tf" else repro_level_size
        if cfg.num_levels > 1:
            if use_cv2:
                g = gaussian_kernel_tf_1d(1.5)
                planes = [cv2.sepFilter2D(np.ascontiguousarray(xb[0].numpy()), -1, g, g,
                                          borderType=cv2.BORDER_CONSTANT) for xb in x]
                smooth = torch.from_numpy(np.stack(planes))[:, None]
            else:
                smooth = F.conv2d(x, self.gauss, padding=self.gauss.shape[-1] // 2)
            for lvl in range(1, cfg.num_levels):
                size = size_fn(h, w, cfg.factor, lvl)
                out.append(F.interpolate(smooth, size=size, mode="bilinear", align_corners=True))
        return out

    def min_input_size(self) -> int:
        """Smallest image side the network accepts."""
        return self._min_size

    def _compute_min_size(self) -> int:
        """Smallest image side the network accepts (the local-normalisation reflect padding
        of 32 px needs every internal level to be at least 33 px)."""
        need = LOCAL_NORM_WINDOW // 2 + 1 if self.config.variant != "pt" else 5
        s = need
        while True:
            sizes = [tf_level_size(s, s, self.config.factor, lvl)[0] for lvl in range(self.config.num_levels)]
            if min(sizes) >= need:
                return s
            s += 1

    # -- plain and fast computations -------------------------------------------------
    def _use_fast(self) -> bool:
        standard = self.config.handcrafted and self.config.num_blocks > 0  # ablations: plain path
        return self.fast and standard and not self.training and not torch.is_grad_enabled()

    def _fused_learner(self) -> List[Tuple[torch.Tensor, torch.Tensor, int]]:
        """The learnable blocks with each batch norm folded into its convolution (eval only)."""
        fused = []
        for blk in self.learner:
            bn = blk.bn
            k, t = bn_scale_shift(bn)
            w = (blk.conv.weight * k[:, None, None, None]).contiguous(memory_format=torch.channels_last)
            b = blk.conv.bias * k + t
            fused.append((w, b, blk.conv.padding[0]))
        return fused

    def _fast_weights(self, pairs: bool) -> Dict[str, Any]:
        """Inference weights of the fast path (batch norms folded, pair layout), cached
        until a parameter or buffer changes (their version counters and storage)."""
        tensors = list(self.parameters()) + list(self.buffers())
        key = (pairs, tuple((t.data_ptr(), t._version) for t in tensors))
        if self._fast_cache is not None and self._fast_cache[0] == key:
            return self._fast_cache[1]
        layers = self._fused_learner()
        convs = [PairConv(wt, bb, relu=True) for wt, bb, _ in layers] if pairs else layers
        conv = self.head_conv
        wk = conv.weight[0]  # (C, k, k)
        shift = None
        if isinstance(self.head_bn, nn.BatchNorm2d):
            scale, shift = bn_scale_shift(self.head_bn)
            wk_s = wk * scale[:, None, None]
        else:
            wk_s = wk
        nf = self.config.num_filters
        heads = []
        for lvl in range(self.config.num_levels):
            # (k, C, 1, k): a 1xk convolution with one output channel per kernel row
            wl = wk_s[lvl * nf:(lvl + 1) * nf].permute(1, 0, 2)[:, :, None, :]
            heads.append(PairConv(wl, None, relu=False) if pairs
                         else wl.contiguous(memory_format=torch.channels_last))
        kk = (wk * shift[:, None, None]).sum(0) if shift is not None else None  # shift response per tap
        out = {"convs": convs, "heads": heads, "kk": kk, "bias": conv.bias, "k": conv.kernel_size[0]}
        self._fast_cache = (key, out)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated learnable features of all internal levels at input resolution (the
        plain computation; the fast path never materialises them for the whole image)."""
        return torch.cat(self._level_features_plain(x), 1)

    def _level_features_plain(self, x: torch.Tensor) -> List[torch.Tensor]:
        h, w = x.shape[-2:]
        align = self.config.variant != "pt"
        feats = []
        for xi in self.level_inputs(x):
            if self.config.handcrafted:
                f = self.handcrafted(xi, fast=self.fast)
            elif self.config.variant == "pt":
                f = xi
            else:
                f = local_norm(xi) if self.fast else local_norm_reference(xi)
            if self.fast:  # training: channels-last convolutions (and their backward) are faster
                f = f.contiguous(memory_format=torch.channels_last)
            f = self.learner(f)
            if f.shape[-2:] != (h, w):
                f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=align)
            feats.append(f)
        return feats

    # -- fast inference path ---------------------------------------------------------
    def _pairs(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.pair_convs

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
        cfg = self.config
        cpu = x.device.type == "cpu" and self.use_opencv
        pairs = self._pairs(x)
        fw = self._fast_weights(pairs)
        normed = []
        for xi in self.level_inputs(x, use_cv2=cpu):
            if cpu:
                normed.append(np.stack([self.handcrafted.normalise_cv2(xb[0].numpy()) for xb in xi]))
            else:
                normed.append(local_norm(xi) if cfg.variant != "pt" else xi)
        rh = self.head_conv.kernel_size[0] // 2
        rows = max(8, int(self.strip_pixels) // max(w, 1))
        out = x.new_empty((b, 1, h, w))
        for a0 in range(0, h, rows):
            a1 = min(h, a0 + rows)
            f0, f1 = max(0, a0 - rh), min(h, a1 + rh)  # feature rows the head reads
            feats = [self._strip_features(n, fw["convs"], f0, f1, h, w, pairs) for n in normed]
            o = self._head_fast(feats, fw, w, row0=f0, height=h)
            out[:, :, a0:a1] = o[:, :, a0 - f0:a1 - f0]
        return out

    def _strip_features(self, normed, convs, f0: int, f1: int, h: int, w: int, pairs: bool
                        ) -> Tuple[torch.Tensor, Optional[Tuple[torch.Tensor, ...]]]:
        """Features of one internal level for output rows [f0, f1), channels-last, at the
        input width (W, or W + 1 with pairs and odd W). Returns ``(features, rows)``: for
        the full-resolution level the features of rows [f0, f1) and ``None``; for a smaller
        level the features of its own source rows, up-sampled along x only, and the
        ``(r0, r1, lam)`` that interpolate them along y (:func:`~kpcore.ops.lerp_rows`). The head
        applies that last step after its 1xK convolution, which acts along x only and so
        commutes with it: 5 channels to interpolate instead of 8, on fewer rows."""
        cfg = self.config
        hl, wl = normed.shape[-2:]
        align = cfg.variant != "pt"
        if hl == h and wl == w:
            s0, s1, interp = f0, f1, None
        else:
            i0, i1, lam = bilinear_rows(hl, h, f0, f1, align)
            s0, s1 = int(i0.min()), int(i1.max()) + 1
            interp = (i0 - s0, i1 - s0, lam)
        halo = 2 + cfg.num_blocks * (cfg.kernel_size // 2)  # Sobel pair + convolutions
        c0, c1 = max(0, s0 - halo), min(hl, s1 + halo)
        if isinstance(normed, np.ndarray):
            hc = [self.handcrafted.derivatives_cv2(nb[c0:c1], even=pairs) for nb in normed]
            f = torch.from_numpy(hc[0][None] if len(hc) == 1 else np.stack(hc)).permute(0, 3, 1, 2)
        else:
            f = self.handcrafted.derivatives(normed[..., c0:c1, :], fast=True)
            f = f.contiguous(memory_format=torch.channels_last)
        for layer in convs:
            if pairs:
                f = layer(f, wl)
            else:
                wt, bb, pad = layer
                f = conv2d_act(f, wt, bb, (pad, pad), relu=True)
        f = f[:, :, s0 - c0:s1 - c0]
        if interp is None:
            return f, None
        # Along x by F.interpolate with the rows unchanged (exact along y).
        up = F.interpolate(f[..., :wl], size=(s1 - s0, w), mode="bilinear", align_corners=align)
        if pairs and w % 2:
            up = F.pad(up.permute(0, 2, 3, 1), (0, 0, 0, 1)).permute(0, 3, 1, 2)
        return up, interp

    def _head_fast(self, feats: List[Tuple[torch.Tensor, Any]], fw: Dict[str, Any], width: int,
                   row0: int = 0, height: Optional[int] = None) -> torch.Tensor:
        """Head BN + KxK convolution to one channel without concatenating the levels: per
        level one C->K convolution with a 1xK kernel gives, for each kernel row dy, the row
        response; the K rows are then summed at their vertical offsets. oneDNN runs a C->1
        KxK convolution at a few GFLOP/s and the concatenation is a full extra pass; this is
        faster. The BN scale folds into the weights; its shift, which the convolution's
        zero padding does not see at the border, is added as the exact rank-K map
        ``R K C^T`` (R, C: which kernel rows/columns fall inside the image). ``feats``: the
        ``(features, rows)`` of :meth:`_strip_features` per level; ``fw``: the weights of
        :meth:`_fast_weights`. ``width``: the true width (the features may carry one extra
        zero column, see :class:`PairConv`); ``row0``, ``height``: where the rows of
        ``feats`` lie in an image of ``height`` rows (a strip; rows within K//2 of a strip
        edge inside the image are not exact)."""
        k = fw["k"]
        r = k // 2
        full = next(f for f, interp in feats if interp is None)
        b, _, h, wp = full.shape
        height = h if height is None else height
        pairs = self._pairs(full)
        g = None
        for (f, interp), hw in zip(feats, fw["heads"]):
            if pairs:
                gl = hw(f, width)
            else:
                gl = conv2d_act(f, hw, None, (0, r), relu=False)
            if interp is not None:  # bilinear along y, after the x-only convolution
                gl = torch.stack([lerp_rows(gb.permute(1, 2, 0), *interp) for gb in gl]).permute(0, 3, 1, 2)
            g = gl if g is None else g.add_(gl)
        dev, dt = g.device, g.dtype
        bias, kk = fw["bias"], fw["kk"]
        if kk is not None:
            ys = row0 + torch.arange(h, device=dev)[:, None] + torch.arange(k, device=dev) - r
            xs = torch.arange(wp, device=dev)[:, None] + torch.arange(k, device=dev) - r
            rows = ((ys >= 0) & (ys < height)).to(dt)
            cols = ((xs >= 0) & (xs < width)).to(dt)
            out = torch.addmm(bias.to(dt), rows @ kk, cols.t())  # (H, Wp)
            out = out.expand(b, h, wp) + g[:, r]
        else:
            out = g[:, r] + bias
        for dy in range(k):
            s = dy - r
            if s > 0:
                out[:, : h - s] += g[:, dy, s:]
            elif s < 0:
                out[:, -s:] += g[:, dy, : h + s]
        return out[:, None, :, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"KeyNet expects a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")
        m = self._min_size
        if min(x.shape[-2:]) < m:
            raise ValueError(
                f"image of {x.shape[-1]}x{x.shape[-2]} px is smaller than Key.Net needs "
                f"(at least {m} px on each side)"
            )
        if self._use_fast():
            out = self._forward_fast(x.float())
        else:
            out = self.head_conv(self.head_bn(torch.cat(self._level_features_plain(x), 1)))
        if self.config.head_relu:
            out = F.relu(out)
        return out
