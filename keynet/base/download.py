"""Fetching files from their published addresses: streamed to a temporary file beside the
target, size and SHA-256 checked when known (printed always, so that a first download can be
recorded), then renamed into place: an interrupted or corrupt download never leaves a file
that looks complete. Any URL ``urllib`` reads works, ``file://`` included (tests, mirrors)."""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

PathLike = Union[str, os.PathLike]


class DownloadError(RuntimeError):
    """A download failed or its content is not the expected one (named in the message)."""


@dataclass(frozen=True)
class Artefact:
    """A public file: where it is published, what it is, and (when recorded) its size and
    SHA-256."""
    name: str
    url: str
    filename: str
    description: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    extract: bool = False  # a .tar.gz to unpack into the target folder


def sha256_of(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(artefact: Artefact, out_dir: PathLike, url: Optional[str] = None, progress: bool = True,
          overwrite: bool = False) -> Path:
    """Download ``artefact`` (from ``url`` when given, e.g. a mirror or a ``file://`` copy) into
    ``out_dir``; returns the file (or the unpacked folder for an archive). A file already
    there with the recorded checksum is kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / artefact.filename
    if target.is_file() and not overwrite and artefact.sha256 and sha256_of(target) == artefact.sha256:
        return _unpack(artefact, target, out_dir)
    src = url or artefact.url
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=str(out_dir))
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                resp = urllib.request.urlopen(src, timeout=60)  # noqa: S310 - the user asked for this URL
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise DownloadError(f"cannot download {artefact.name} from {src}: {e}") from None
            with resp:
                total = resp.headers.get("Content-Length")
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc=artefact.filename, disable=not progress)
                shutil.copyfileobj(_Counting(resp, bar), f, length=1 << 20)
                bar.close()
        size = os.path.getsize(tmp)
        if artefact.size is not None and size != artefact.size:
            raise DownloadError(f"{artefact.name}: {size} bytes downloaded from {src}, expected {artefact.size}")
        digest = sha256_of(tmp)
        if artefact.sha256 is not None and digest != artefact.sha256:
            raise DownloadError(f"{artefact.name}: SHA-256 {digest} of the download from {src} differs from the "
                                f"recorded {artefact.sha256}")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return _unpack(artefact, target, out_dir)


class _Counting:
    """A file-like reader that advances a progress bar."""

    def __init__(self, raw, bar) -> None:
        self.raw, self.bar = raw, bar

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.bar.update(len(b))
        return b


def _unpack(artefact: Artefact, target: Path, out_dir: Path) -> Path:
    if not artefact.extract:
        return target
    try:
        with tarfile.open(target) as tar:
            tar.extractall(out_dir, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DownloadError(f"{target}: cannot unpack ({e})") from None
    return out_dir
