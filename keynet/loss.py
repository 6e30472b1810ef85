"""The M-SIP (multi-scale index proposal) loss of Key.Net, as the official TensorFlow code.

For each window size N (8, 16, 24, 32, 40 with weights 256, 64, 16, 4, 1):

* both score maps pass a ReLU (the network's raw output has none) and are cropped at the
  top-left to a multiple of N; a 16-px border mask (built on the full patch, then cropped)
  zeroes the borders;
* each map is warped into the other view with the ground-truth homography (bilinear,
  zeros outside; no gradient through the warped map) and visibility masks are warped
  along: ``vis_src`` marks source pixels whose correspondent lies inside the destination's
  border mask, and vice versa;
* target: the hard argmax of the warped other map inside each N x N window (1-based
  ``(row, col)`` window indices; a window whose maximum is 0 gets random indices in
  ``[0, N)``, as the official code);
* prediction: the soft-argmax of the map inside the window with weights
  ``exp(R / (max_window + 1e-6)) - (1 - 1e-6)`` (the window max is detached);
* window weight: the soft score ``sum(e * R) / sum(e)`` (detached), soft-maxed over the
  windows **of each image**, times 100 and times the window's visibility;
* ``loss_N = 1000 * mean(w * ||(idx - target) / N||^2)`` averaged over both directions;
  the total is ``sum_N factor_N * loss_N``.

Options (not the official behaviour): ``softmax_scope='batch'`` (the unofficial PyTorch
reproduction's softmax over the whole batch), ``coordinate_weighting=False`` (visibility
weights only), ``random_fill=False`` (empty windows keep target 0 instead of random).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_perspective

MSIP_SIZES: Tuple[int, ...] = (8, 16, 24, 32, 40)
MSIP_FACTORS: Tuple[float, ...] = (256.0, 64.0, 16.0, 4.0, 1.0)
BORDER = 16
_EPS_NMS = 2.220446049250313e-16  # np.finfo(float).eps, as the official weights_norm


@dataclass
class MSIPConfig:
    """The M-SIP loss."""

    sizes: Tuple[int, ...] = field(default=MSIP_SIZES, metadata={"flags": ("--msip-sizes",),
                                                               "help": "window sizes"})
    factors: Tuple[float, ...] = field(default=MSIP_FACTORS, metadata={"flags": ("--msip-factors",),
                                                                     "help": "weight of each window size"})
    border: int = field(default=BORDER, metadata={"flags": ("--msip-border",), "help": "border mask (px)"})
    apply_relu: bool = field(default=True, metadata={"flags": ("--msip-relu",),
                                                     "help": "ReLU on the maps before the loss"})
    coordinate_weighting: bool = field(default=True, metadata={"flags": ("--weight-coordinates",),
                                                               "help": "weight windows by their soft score"})
    softmax_scope: str = field(default="image", metadata={
        "choices": ("image", "batch"),
        "help": "window-weight softmax per image (official) or over the batch (the reproduction)"})
    random_fill: bool = field(default=True, metadata={
        "help": "empty windows get random targets (official); false: target 0"})

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        self.factors = tuple(float(f) for f in self.factors)
        if len(self.sizes) != len(self.factors):
            raise ValueError("MSIP sizes and factors differ in length")
        if self.softmax_scope not in ("image", "batch"):
            raise ValueError(f"softmax_scope must be 'image' or 'batch', not {self.softmax_scope!r}")


def border_mask(batch: int, height: int, width: int, border: int, device=None, dtype=torch.float32) -> torch.Tensor:
    m = torch.zeros(batch, 1, height, width, device=device, dtype=dtype)
    if height > 2 * border and width > 2 * border:
        m[:, :, border:height - border, border:width - border] = 1.0
    return m


def _windows(x: torch.Tensor, n: int) -> torch.Tensor:
    """B x 1 x H x W (H, W multiples of n) -> B x h x w x n*n (row-major inside a window)."""
    b, _, hh, ww = x.shape
    return x.reshape(b, hh // n, n, ww // n, n).permute(0, 1, 3, 2, 4).reshape(b, hh // n, ww // n, n * n)


def _window_grid(n: int, device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(1, n + 1, device=device, dtype=dtype)
    rows = r.repeat_interleave(n)   # 1..n, each n times (row index, 1-based)
    cols = r.repeat(n)              # 1..n cycling (column index, 1-based)
    return rows, cols


def soft_argmax(maps: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Index-proposal layer: (soft indices B x h x w x 2 as (row, col) 1-based, soft scores B x h x w).

    Temperature = the detached window max; the soft score is detached as officially.
    """
    win = _windows(maps, n)
    wmax = win.detach().amax(dim=-1, keepdim=True)
    e = torch.exp(win / (wmax + 1e-6)) - (1.0 - 1e-6)
    denom = e.sum(-1) + 1e-6
    rows, cols = _window_grid(n, maps.device, maps.dtype)
    idx = torch.stack(((e * rows).sum(-1) / denom, (e * cols).sum(-1) / denom), dim=-1)
    with torch.no_grad():
        # ip_softscores: the window max is not detached there, but the whole score is
        ed = e.detach()
        soft = (ed * win.detach()).sum(-1) / (ed.sum(-1) + 1e-6)
    return idx, soft


def hard_argmax(maps: torch.Tensor, n: int, generator: Optional[torch.Generator] = None,
                random_fill: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """(indices B x h x w x 2 (row, col) 1-based, window max B x h x w); no gradient.

    Windows whose maximum is 0 get indices drawn uniformly in [0, n) (official behaviour).
    """
    with torch.no_grad():
        win = _windows(maps, n)
        wmax, arg = win.max(dim=-1)
        norm = wmax / (wmax + _EPS_NMS)
        idx = torch.stack(((arg // n + 1).to(maps.dtype) * norm, (arg % n + 1).to(maps.dtype) * norm), dim=-1)
        if random_fill:
            rnd = torch.randint(0, n, idx.shape, generator=generator,
                                device=generator.device if generator is not None else maps.device)
            idx = torch.where(idx == 0, rnd.to(device=maps.device, dtype=maps.dtype), idx)
    return idx, wmax


def _crop_size(h: int, w: int, n: int) -> Tuple[int, int]:
    return h - h % n, w - w % n


def msip_loss(src_out: torch.Tensor, dst_out: torch.Tensor, h_src2dst: torch.Tensor, h_dst2src: torch.Tensor,
              config: Optional[MSIPConfig] = None, generator: Optional[torch.Generator] = None,
              return_terms: bool = False):
    """M-SIP loss between the network outputs of the two views (B x 1 x H x W each).

    ``h_src2dst`` / ``h_dst2src``: B x 3 x 3 homographies in pixel coordinates mapping
    source pixels to destination pixels and back. Returns the scalar loss, or
    ``(loss, {N: loss_N})`` with ``return_terms``.
    """
    cfg = config or MSIPConfig()
    if src_out.shape != dst_out.shape or src_out.dim() != 4 or src_out.shape[1] != 1:
        raise ValueError(f"expected two B x 1 x H x W maps of the same shape, got {tuple(src_out.shape)} "
                         f"and {tuple(dst_out.shape)}")
    b, _, hh, ww = src_out.shape
    src = F.relu(src_out) if cfg.apply_relu else src_out
    dst = F.relu(dst_out) if cfg.apply_relu else dst_out
    h_s2d = h_src2dst.to(src.dtype)
    h_d2s = h_dst2src.to(src.dtype)
    full_mask = border_mask(b, hh, ww, cfg.border, device=src.device, dtype=src.dtype)

    # warps depend only on the crop size: share them between window sizes with the same crop
    cache: Dict[Tuple[int, int], tuple] = {}

    def prepared(ch: int, cw: int):
        if (ch, cw) not in cache:
            s, d, m = src[:, :, :ch, :cw], dst[:, :, :ch, :cw], full_mask[:, :, :ch, :cw]
            with torch.no_grad():
                stack = torch.cat((s.detach() * m, d.detach() * m, m, m), 0)
                mats = torch.cat((h_s2d, h_d2s, h_d2s, h_s2d), 0)
                warped = warp_perspective(stack, mats, (ch, cw), mode="bilinear", padding_mode="zeros",
                                          align_corners=True)
                s_w, d_w, vis_s, vis_d = warped.split(b, 0)
                vis_s = vis_s * m   # source pixels seen inside the destination's mask
                vis_d = vis_d * m
                s_w = s_w * vis_d   # source map in the destination frame
                d_w = d_w * vis_s   # destination map in the source frame
            cache[(ch, cw)] = (s * vis_s, d * vis_d, s_w, d_w, vis_s, vis_d)
        return cache[(ch, cw)]

    total = src.new_zeros(())
    terms = {}
    for n, factor in zip(cfg.sizes, cfg.factors):
        ch, cw = _crop_size(hh, ww, n)
        if ch == 0 or cw == 0:
            raise ValueError(f"score map {hh}x{ww} is smaller than the M-SIP window {n}")
        s, d, s_w, d_w, vis_s, vis_d = prepared(ch, cw)
        vis_w_s = _windows(vis_s, n).amax(-1)
        vis_w_d = _windows(vis_d, n).amax(-1)
        tgt_s, _ = hard_argmax(d_w, n, generator, cfg.random_fill)   # target for source windows
        tgt_d, _ = hard_argmax(s_w, n, generator, cfg.random_fill)
        idx_s, soft_s = soft_argmax(s, n)
        idx_d, soft_d = soft_argmax(d, n)
        if cfg.coordinate_weighting:
            if cfg.softmax_scope == "image":
                w_s = torch.softmax(soft_s.reshape(b, -1), dim=1).reshape(soft_s.shape)
                w_d = torch.softmax(soft_d.reshape(b, -1), dim=1).reshape(soft_d.shape)
            else:
                w_s = torch.softmax(soft_s.reshape(-1), dim=0).reshape(soft_s.shape)
                w_d = torch.softmax(soft_d.reshape(-1), dim=0).reshape(soft_d.shape)
            w_s = 100.0 * vis_w_s * w_s
            w_d = 100.0 * vis_w_d * w_d
        else:
            w_s, w_d = vis_w_s, vis_w_d
        loss_s = (1000.0 * w_s * (((idx_s - tgt_s) / n) ** 2).sum(-1)).mean()
        loss_d = (1000.0 * w_d * (((idx_d - tgt_d) / n) ** 2).sum(-1)).mean()
        loss_n = (loss_s + loss_d) / 2.0
        terms[n] = loss_n
        total = total + factor * loss_n
    return (total, terms) if return_terms else total
