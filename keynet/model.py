"""The Key.Net network: hand-crafted derivative block, shared learnable blocks over an
internal pyramid, and a head. One class covers the three published parameterisations:

- ``tf``    the official TensorFlow code (default): Sobel on the locally normalised image,
            7x7 Gaussian (unnormalised, sigma 1.5) + align-corners bilinear resize per
            internal level, BN(eps 1e-3) over the concatenated features + KxK conv head.
- ``repro`` the unofficial PyTorch reproduction: as ``tf`` but BN eps 1e-5 and a 1x1 head.
- ``pt``    the authors' later PyTorch port (kornia's ``KeyNet``): Sobel/8 with replicate
            padding, no local normalisation, cumulative ``pyrdown`` levels, no head BN,
            KxK conv + ReLU head.

The network only: its ``forward`` is the computation training differentiates; fast,
bounded-memory inference is :class:`keynet.engine.KeyNetEngine`'s job.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import pyrdown
from torch import nn


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
        internal levels, 5921 parameters) or ``tiny`` (the paper's Tiny-Key.Net: the
        hand-crafted block and one learnable block of a single filter, no internal pyramid:
        281 parameters, the paper's "280")."""
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
    "tiny": dict(num_filters=1, num_blocks=1, num_levels=1),
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


class HandcraftedBlock(nn.Module):
    """The ten derivative channels (first and second order Sobel derivatives and products)."""

    def __init__(self, variant: str = "tf") -> None:
        super().__init__()
        self.variant = variant
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        k = torch.stack([sx, sx.t()])[:, None]  # (2,1,3,3): d/dx, d/dy
        self.register_buffer("sobel", k, persistent=False)

    def _grad(self, x: torch.Tensor, reference: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        if not reference:
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

    def forward(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """Local normalisation (``tf``, ``repro``) and the ten channels. ``reference``: the
        TF computation literally (65x65 average pooling, Sobel convolutions); otherwise
        cumulative sums and separable Sobel (the same values to float rounding)."""
        if self.variant != "pt":
            x = local_norm_reference(x) if reference else local_norm(x)
        return self.derivatives(x, reference=reference)

    def derivatives(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """The ten channels of ``x`` itself (no local normalisation), in the variant's order.
        ``reference``: Sobel convolutions instead of separable differences (same values up
        to float rounding)."""
        dx, dy = self._grad(x, reference)
        dxx, dxy = self._grad(dx, reference)
        _, dyy = self._grad(dy, reference)
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

    # -- internal pyramid -------------------------------------------------------------
    def level_inputs(self, x: torch.Tensor, smooth: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """The inputs of the learnable blocks at each internal pyramid level. ``smooth``:
        the input blurred by :func:`gaussian_kernel_tf` when the caller has it already (the
        inference engine blurs with OpenCV on the CPU)."""
        cfg = self.config
        h, w = x.shape[-2:]
        out = [x]
        if cfg.variant == "pt":
            cur = x
            for _ in range(1, cfg.num_levels):
                cur = pyrdown(cur, factor=cfg.factor)
                out.append(cur)
            return out
        size_fn = tf_level_size if cfg.variant == "tf" else repro_level_size
        if cfg.num_levels > 1:
            if smooth is None:
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

    # -- the computation ---------------------------------------------------------------
    def level_features(self, x: torch.Tensor, reference: bool = False) -> List[torch.Tensor]:
        """The learnable features of each internal level, at input resolution.
        ``reference``: see :meth:`forward_reference`."""
        h, w = x.shape[-2:]
        cfg = self.config
        align = cfg.variant != "pt"
        feats = []
        for xi in self.level_inputs(x):
            if cfg.handcrafted:
                f = self.handcrafted(xi, reference=reference)
            elif cfg.variant == "pt":
                f = xi
            else:
                f = local_norm_reference(xi) if reference else local_norm(xi)
            if not reference:  # channels-last convolutions (and their backward) are faster
                f = f.contiguous(memory_format=torch.channels_last)
            f = self.learner(f)
            if f.shape[-2:] != (h, w):
                f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=align)
            feats.append(f)
        return feats

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"KeyNet expects a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")
        m = self._min_size
        if min(x.shape[-2:]) < m:
            raise ValueError(
                f"image of {x.shape[-1]}x{x.shape[-2]} px is smaller than Key.Net needs "
                f"(at least {m} px on each side)"
            )

    def _head(self, feats: List[torch.Tensor]) -> torch.Tensor:
        out = self.head_conv(self.head_bn(torch.cat(feats, 1)))
        return F.relu(out) if self.config.head_relu else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The response map (training and the reference of the inference engine): local
        normalisation by cumulative sums, separable Sobel, channels-last convolutions."""
        self._check(x)
        return self._head(self.level_features(x))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same response computed as the TF graph literally does (65x65 average
        pooling, Sobel convolutions, NCHW): the plain reference of the speed benchmark."""
        self._check(x)
        return self._head(self.level_features(x, reference=True))
