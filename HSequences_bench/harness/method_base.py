"""What every benchmark method shares: its errors, the digests of the weights it reads, the
8-bit input of the OpenCV methods and our shipped HardNet."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from hardnet import HardNetDescriptor
from hardnet.weights import DEFAULT_DESCRIPTOR
from keynet.base.files import file_digest
from keynet.pipeline.extraction import load_descriptor

PathLike = Union[str, os.PathLike]


class MethodError(ValueError):
    """A method cannot be built (unknown name, missing or unusable weights file)."""


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A 0..255 float image rounded to uint8 (the input of the OpenCV methods)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class MethodSkipped(Exception):
    """A method that cannot run here and is left out with a note (a default weights file is absent)."""



def weights_digest(path: PathLike, what: str) -> str:
    """:func:`file_digest` of the weights file ``path`` (missing: :class:`MethodError` naming ``what``)."""
    p = Path(path)
    if not p.is_file():
        raise MethodError(f"{what} weights not found: {p}")
    return file_digest(p)


def our_hardnet(device: Optional[str]) -> HardNetDescriptor:
    """Our shipped HardNet (``load_descriptor('default')``)."""
    desc = load_descriptor("default", device=device)
    if desc is None:
        raise MethodError(f"no HardNet weights at {DEFAULT_DESCRIPTOR}")
    return desc


def hardnet_digest() -> str:
    """The digest of our shipped HardNet."""
    return weights_digest(DEFAULT_DESCRIPTOR, "shipped HardNet")
