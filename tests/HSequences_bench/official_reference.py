"""An independent, slow re-statement of the official HSequences formulas, for parity tests.

Written from the official protocol (dense O(N*M) matrices, the official full
``argsort`` greedy, eigenvalue scale transfer, per-point mask look-up with Python
``round``), sharing no code with HSequences_bench. Not for production use.
"""
from __future__ import annotations

import cv2
import numpy as np


def _frame(img: np.ndarray, b: int) -> np.ndarray:
    out = np.zeros_like(img)
    out[b:img.shape[0] - b, b:img.shape[1] - b] = img[b:img.shape[0] - b, b:img.shape[1] - b]
    return out


def masks(h_dst_2_src, shape_src, shape_dst):
    inv_h = np.linalg.inv(h_dst_2_src)
    inv_h = inv_h / inv_h[2, 2]
    m_src = cv2.warpPerspective(_frame(np.ones(shape_dst[:2]), 15), h_dst_2_src, (shape_src[1], shape_src[0]))
    m_src = _frame(np.where(m_src >= 0.75, 1.0, 0.0), 15)
    m_dst = cv2.warpPerspective(_frame(np.ones(shape_src[:2]), 15), inv_h, (shape_dst[1], shape_dst[0]))
    m_dst = _frame(np.where(m_dst >= 0.75, 1.0, 0.0), 15)
    return m_src, m_dst


def warp(points, h):
    """Per point: projective map, scale by the eigenvalues of (A (s^2+eps) A^T)^-1."""
    out = []
    for x, y, s, score in points:
        p = h.dot([x, y, 1.0])
        den = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        nx = h[0, 0] * x + h[0, 1] * y + h[0, 2]
        ny = h[1, 0] * x + h[1, 1] * y + h[1, 2]
        a = np.array([[h[0, 0] / den - nx * h[2, 0] / den ** 2, h[0, 1] / den - nx * h[2, 1] / den ** 2],
                      [h[1, 0] / den - ny * h[2, 0] / den ** 2, h[1, 1] / den - ny * h[2, 1] / den ** 2]])
        t = s ** 2 + np.finfo(np.float32).eps
        m = np.linalg.inv(a @ np.linalg.inv(np.array([[1 / t, 0], [0, 1 / t]])) @ a.T)
        e = np.linalg.eig(m)[0]
        out.append([p[0] / p[2], p[1] / p[2], 1 / ((e[0] * e[1]) ** 0.5) ** 0.5, score])
    return np.asarray(out).reshape(-1, 4)


def _inter(R, r, d):
    inter = np.zeros_like(d)
    enc = d <= np.abs(R - r)
    inter[enc] = np.pi * np.minimum(R, r)[enc] ** 2
    part = (~enc) & (d < R + r)
    with np.errstate(invalid="ignore", divide="ignore"):
        al = np.arccos((d ** 2 + r ** 2 - R ** 2) / (2 * d * r))
        be = np.arccos((d ** 2 + R ** 2 - r ** 2) / (2 * d * R))
        val = r ** 2 * al + R ** 2 * be - 0.5 * (r ** 2 * np.sin(2 * al) + R ** 2 * np.sin(2 * be))
    inter[part] = val[part]
    return inter


def _greedy(mat, thr, kind=None):
    n_dst = mat.shape[1]
    used_r, used_c = set(), set()
    found, err = 0, 0.0
    for idx in (-1 * mat).flatten().argsort(kind=kind):
        r, c = idx // n_dst, idx % n_dst
        if r in used_r or c in used_c:
            continue
        v = mat[r, c]
        if v < thr:
            break
        found += 1
        err += 1 - v
        used_r.add(r)
        used_c.add(c)
    return found, err


def repeatability(src, dst, overlap=0.6, dist_thr=5.0, radius=30.0, kind=None):
    d = np.sqrt((src[:, None, 0] - dst[None, :, 0]) ** 2 + (src[:, None, 1] - dst[None, :, 1]) ** 2)
    possible = int(np.sum((d <= dist_thr).any(axis=1)))
    rs = np.broadcast_to(src[:, None, 2], d.shape)
    rd = np.broadcast_to(dst[None, :, 2], d.shape)
    f = radius / (np.maximum(rs, rd) + np.finfo(float).eps)
    i_m = _inter(f * rs, f * rd, d)
    iou_m = i_m / (np.pi * (f * rs) ** 2 + np.pi * (f * rd) ** 2 - i_m + 1e-6)
    full = np.full(d.shape, radius)
    i_s = _inter(full, full, d)
    iou_s = i_s / (2 * np.pi * radius ** 2 - i_s + 1e-6)
    iou_m[d > 4 * radius] = 0
    iou_s[d > 4 * radius] = 0
    thr = 1 - (1 - overlap)
    fs, es = _greedy(iou_s, thr, kind)
    fm, em = _greedy(iou_m, thr, kind)
    n = min(len(src), len(dst))
    return {"rep_single_scale": fs / n * 100.0, "rep_multi_scale": fm / n * 100.0,
            "num_points_single_scale": fs, "num_points_multi_scale": fm,
            "error_overlap_single_scale": es / (fs + np.finfo(float).eps) if fs else 0.0,
            "error_overlap_multi_scale": em / (fm + np.finfo(float).eps) if fm else 0.0,
            "total_num_points": n, "possible_matches": possible}


def pair_metrics(src_file, dst_file, src_dsc, dst_dsc, h_s2d, shape_src, shape_dst, top_k=1000,
                 overlap=0.6, pixel_threshold=5, dst_to_src=True, sort_kind=None):
    """Official metrics of one pair from the raw arrays of the files (xysr order).
    ``sort_kind``: argsort kind of the greedy assignment (None: numpy's default, as the
    official code; 'stable': ties in row-major order)."""
    h_d2s = np.linalg.inv(h_s2d)
    h_d2s = h_d2s / h_d2s[2, 2]
    m_src, m_dst = masks(h_d2s, shape_src, shape_dst)
    src = np.asarray([[p[1], p[0], p[2], p[3]] for p in src_file])
    dst = np.asarray([[p[1], p[0], p[2], p[3]] for p in dst_file])
    keep_s = [i for i, p in enumerate(src) if m_src[int(round(p[0])), int(round(p[1]))]]
    keep_d = [i for i, p in enumerate(dst) if m_dst[int(round(p[0])), int(round(p[1]))]]
    src, src_dsc = src[keep_s], src_dsc[keep_s]
    dst, dst_dsc = dst[keep_d], dst_dsc[keep_d]
    if top_k:
        i = np.argsort(-1 * src[:, 3])[:top_k]
        j = np.argsort(-1 * dst[:, 3])[:top_k]
        src, src_dsc, dst, dst_dsc = src[i], src_dsc[i], dst[j], dst_dsc[j]
    src = np.asarray([[p[1], p[0], p[2], p[3]] for p in src])
    dst = np.asarray([[p[1], p[0], p[2], p[3]] for p in dst])
    if dst_to_src:
        ps, pd = src.astype(np.float64), warp(dst, h_d2s)
    else:
        ps, pd = warp(src, h_s2d), dst.astype(np.float64)
    rep = repeatability(ps, pd, overlap, pixel_threshold, kind=sort_kind)
    l2 = ((src_dsc[:, None, :].astype(np.float64) - dst_dsc[None, :, :]) ** 2).sum(-1)
    fwd, bwd = l2.argmin(axis=1), l2.argmin(axis=0)
    matches = np.array([[i, fwd[i]] for i in range(len(fwd)) if bwd[fwd[i]] == i]).reshape(-1, 2)
    dist = np.sqrt((ps[matches[:, 0], 0] - pd[matches[:, 1], 0]) ** 2
                   + (ps[matches[:, 0], 1] - pd[matches[:, 1], 1]) ** 2)
    n = rep["total_num_points"]
    ms = {t: np.sum(dist < t) / n for t in range(1, 11)}
    correct = float(np.sum(dist < pixel_threshold))
    rep.update({"match_score": correct / n, "match_score_corr": correct / (rep["possible_matches"] + 1e-6),
                "num_matches": correct, "num_mutual_corresp": len(matches),
                "MMA": float(np.mean(list(ms.values()))), "num_features": n})
    return rep
