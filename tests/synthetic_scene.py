"""A small synthetic multi-view scene for SfM tests: textured planes (a back wall, a floor,
two slanted panels) ray-cast from known pinhole cameras on an arc.

Pixel convention of the renders: the centre of the top-left pixel is (0, 0) (ours); the
equivalent COLMAP principal point is ``(cx + 0.5, cy + 0.5)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np


def texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Multi-scale noise with discs: distinctive at every scale, float32 in [20, 240]."""
    t = np.zeros((size, size), np.float32)
    for s in (2, 4, 8, 16, 32):
        n = rng.standard_normal((size // s + 2, size // s + 2)).astype(np.float32)
        t += cv2.resize(n, (size, size), interpolation=cv2.INTER_CUBIC) * s ** 0.5
    for _ in range(60):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(t, c, int(rng.integers(4, 40)), float(rng.uniform(-20, 20)), -1)
    t = (t - t.min()) / (t.max() - t.min())
    return (t * 220 + 20).astype(np.float32)


def look_at(C: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a camera at ``C`` looking at ``target``, image y down
    (world y is down too)."""
    z = target - C
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def render(K: np.ndarray, R: np.ndarray, C: np.ndarray, planes, shape: Tuple[int, int]) -> np.ndarray:
    """Ray-cast the textured rectangles ``planes`` [(origin, u, v, extent_u, extent_v,
    texture)] from the camera (K, R world-to-camera, centre C); nearest surface wins."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ R
    img = np.zeros((h, w), np.float32)
    depth = np.full((h, w), np.inf)
    for o, u, v, eu, ev, tex in planes:
        n = np.cross(u, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((o - C) @ n) / (rays @ n)
        P = C + rays * t[..., None]
        a, b = (P - o) @ u, (P - o) @ v
        ok = (t > 0) & (a >= 0) & (a <= eu) & (b >= 0) & (b <= ev) & (t < depth)
        ts = tex.shape[0]
        mx = np.nan_to_num(a / eu * (ts - 1)).astype(np.float32)
        my = np.nan_to_num(b / ev * (ts - 1)).astype(np.float32)
        s = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img[ok] = s[ok]
        depth[ok] = t[ok]
    return img


def make_scene(out_dir: Path, n_cams: int = 6, shape: Tuple[int, int] = (240, 320), seed: int = 0
               ) -> Tuple[np.ndarray, Dict[str, Tuple[np.ndarray, np.ndarray]], List[str]]:
    """Render the scene into ``out_dir/0000.png ...``: returns ``(K (our convention),
    {name: (R_cam_from_world, centre)}, names)``."""
    rng = np.random.default_rng(seed)
    f = 300.0
    K = np.array([[f, 0, (shape[1] - 1) / 2], [0, f, (shape[0] - 1) / 2], [0, 0, 1]])
    slant = np.array([1.0, 0, -0.3]) / np.linalg.norm([1.0, 0, -0.3])
    planes = [
        (np.array([-4.0, -3, 6]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), 8, 6, texture(rng)),
        (np.array([-4.0, 1.5, 1]), np.array([1.0, 0, 0]), np.array([0.0, 0, 1]), 8, 5, texture(rng)),
        (np.array([-1.5, -1, 3.5]), slant, np.array([0.0, 1, 0]), 1.5, 2.5, texture(rng)),
        (np.array([0.8, -0.5, 4.0]), np.array([0.6, 0, 0.8]), np.array([0.0, 1, 0]), 1.5, 2.0, texture(rng)),
    ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt, names = {}, []
    for i in range(n_cams):
        ang = np.deg2rad(-15 + 30 * i / (n_cams - 1))
        C = np.array([3.5 * np.sin(ang), -0.3 + 0.1 * i / n_cams, 4.5 - 3.5 * np.cos(ang)])
        R = look_at(C, np.array([0, 0, 4.5]))
        name = f"{i:04d}.png"
        cv2.imwrite(str(out_dir / name), np.clip(render(K, R, C, planes, shape), 0, 255).astype(np.uint8))
        gt[name] = (R, C)
        names.append(name)
    return K, gt, names
