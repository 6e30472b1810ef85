"""What the wide-baseline benchmarks share: reading images and matrix files, checking point
arrays and estimated models (WxBS, EVD and the synthetic pairs use them)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class IncompletePair:
    """A pair of a benchmark's data folder that lacks some of its files: ``benchmark`` (``WxBS``,
    ``EVD``), ``name`` (the pair's id), ``missing`` (what it lacks, in words) and ``where`` (its
    folder, when that names it better)."""

    benchmark: str
    name: str
    missing: Tuple[str, ...]
    where: Optional[Path] = None

    @property
    def message(self) -> str:
        """One line: ``<benchmark> pair <name> lacks <missing>[: <where>]``."""
        return (f"{self.benchmark} pair {self.name} lacks {' and '.join(self.missing)}"
                + (f": {self.where}" if self.where is not None else ""))


def no_points(pts1, pts2) -> bool:
    """Both point sets are empty (any shape: a method without matches gives ``(0, 2)`` or ``(0,)``)."""
    return np.size(pts1) == 0 and np.size(pts2) == 0


def _short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters: safe inside a one-line message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def data_lines(path: Path, what: str) -> Iterator[Tuple[int, str]]:
    """``(line number, stripped line)`` of the lines of a text file that hold data (blank lines
    and ``#`` comments skipped, as ``np.loadtxt``); ``FileNotFoundError`` naming ``what``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def _read_matrix(path: Path, rows: int, cols: int, what: str) -> np.ndarray:
    """A ``rows x cols`` matrix of finite numbers from a whitespace (or tab) separated text file."""
    values: List[List[float]] = []
    for lineno, line in data_lines(path, what):
        try:
            row = [float(x) for x in line.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: {what} line is not numbers: {_short(line)}") from None
        if len(row) != cols:
            raise ValueError(f"{path}:{lineno}: {what} line has {len(row)} numbers, expected {cols}: {_short(line)}")
        values.append(row)
    if len(values) != rows:
        raise ValueError(f"{path}: {what} has {len(values)} rows, expected {rows}")
    m = np.array(values, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{path}: {what} has non-finite entries")
    return m


def read_image(path: PathLike, grey: bool = False) -> np.ndarray:
    """An image as uint8 RGB ``(H, W, 3)`` (the reference reads with PIL), or ``(H, W)`` when ``grey``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image: {p}")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_shape(path: PathLike) -> Tuple[int, int]:
    """``(height, width)`` of an image file (what the EVD metric takes)."""
    return tuple(read_image(path, grey=True).shape[:2])  # type: ignore[return-value]


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) points, got shape {a.shape}")
    return a


def _as_3x3(M: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(M, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"{name} must be 3x3, got shape {m.shape}")
    return m


def _match_points(pts1: np.ndarray, pts2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    p1, p2 = _as_points(pts1, "pts1"), _as_points(pts2, "pts2")
    if len(p1) != len(p2):
        raise ValueError(f"pts1 and pts2 differ in length: {len(p1)} vs {len(p2)}")
    return np.ascontiguousarray(p1), np.ascontiguousarray(p2)


def sample_points(pts1: np.ndarray, pts2: np.ndarray, minimum: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The matched points ready for an estimator, or ``None`` when there are none at all (any
    shape) or fewer than its ``minimum`` sample."""
    if no_points(pts1, pts2):
        return None
    p1, p2 = _match_points(pts1, pts2)
    return (p1, p2) if len(p1) >= minimum else None


def _valid_model(M) -> Optional[np.ndarray]:
    if M is None:
        return None
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (3, 3) or not np.all(np.isfinite(M)) or not np.any(M):
        return None
    return M
