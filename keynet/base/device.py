"""The one device rule and the one reader of the launcher's environment.

* :func:`resolve_device`: ``None`` / ``"auto"`` -> CUDA when present, else the CPU; any other
  name is checked, so that a missing device is one clear :class:`DeviceError`, not a
  traceback from deep inside torch.
* :class:`LaunchEnv`: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as ``torchrun`` (or any
  launcher) sets them; one process when they are absent.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

DeviceLike = Optional[Union[str, torch.device]]


class DeviceError(ValueError):
    """A requested torch device that does not exist or is not available here."""


def available_devices() -> str:
    """A short description of the devices this process can use, for error messages."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "cpu" + (f", cuda (cuda:0..cuda:{n - 1})" if n else " only (no CUDA device)")


def resolve_device(device: DeviceLike = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU; otherwise the named
    device, checked to exist (:class:`DeviceError` names it and what is available)."""
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(str(device))
        except (RuntimeError, ValueError):
            raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N "
                              f"(available: {available_devices()})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} requested but CUDA is not available "
                              f"(available: {available_devices()})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                              f"device(s) exist (available: {available_devices()})")
    elif dev.type not in ("cpu", "meta"):
        raise DeviceError(f"device {str(device)!r} is not supported here (available: {available_devices()})")
    return dev


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place among the processes of a ``torchrun`` launch."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "LaunchEnv":
        """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (one process when absent)."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1
