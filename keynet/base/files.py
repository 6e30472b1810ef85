"""Files: image lists, image folders, the feature-file layout, and atomic writes so an
interrupted run never leaves a truncated file."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp")
#: Folder name of the HPatches release: the prefix of the official image-list lines and of
#: the feature-file layout.
DEFAULT_PREFIX = "hpatches-sequences-release"


def read_image_list(path: PathLike) -> List[str]:
    """Read an image-list file: one path per line, blank lines and '#' comments skipped.

    Relative paths are kept as written (the official layout mirrors them under the
    results directory). Raises ``FileNotFoundError``/``ValueError`` naming the file.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder, not an image list (a folder of images: --image-dir)")
    if not p.is_file():
        raise FileNotFoundError(f"image list not found: {p}")
    items = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(line)
    if not items:
        raise ValueError(f"image list is empty: {p}")
    return items


def torch_load_reason(exc: BaseException) -> str:
    """A short reason for a file ``torch.load(..., weights_only=True)`` refused: the first
    line of torch's message without its advice (which is about unsafe loading, not about the
    file), at most 120 characters."""
    text = str(exc)
    if "Weights only load failed" in text:
        return "it holds Python objects besides tensors, which are not loaded (weights_only)"
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"\s*\(Could this error message be improved.*$", "", first).strip()
    return first if len(first) <= 120 else first[:117] + "..."


#: :func:`file_digest` of each file read in this process, by (path, size, mtime, inode).
_DIGESTS: Dict[Tuple[str, int, int, int], str] = {}


def file_digest(path: PathLike) -> str:
    """Short SHA-1 of a file's content (12 hex digits; weights in cache keys), read once per
    process while the file's size, modification time and inode stay the same."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha1(p.read_bytes()).hexdigest()[:12]
    return _DIGESTS[key]


def weights_digest(path: PathLike) -> str:
    """:func:`file_digest` of a weights file; of a folder, the digest of its files' names and
    digests (a folder holding the weights); ``'missing'`` when there is none."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file())
        return hashlib.sha1("".join(f"{q.name}={file_digest(q)};" for q in files).encode()).hexdigest()[:12]
    return "missing"


def atomic_save_npy(path: PathLike, array: np.ndarray) -> None:
    """Save ``array`` to ``path`` (``.npy``) atomically: write a temp file, then rename."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    atomic_write_bytes(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def feature_paths(results_dir: PathLike, network_version: str, image_path: str) -> Tuple[Path, Path]:
    """``(<results>/<version>/<image path>.kpt.npy, ... .dsc.npy)``, the official output layout.

    Absolute image paths are placed under the results folder without their leading '/'.
    """
    rel = image_path.lstrip("/\\")
    base = Path(results_dir) / network_version / rel
    return Path(str(base) + ".kpt.npy"), Path(str(base) + ".dsc.npy")


def orientation_path(results_dir: PathLike, network_version: str, image_path: str) -> Path:
    """``<results>/<version>/<image path>.ori.npy``: the keypoints' orientations (N float32
    degrees), next to :func:`feature_paths` (written only for oriented extraction)."""
    return Path(str(Path(results_dir) / network_version / image_path.lstrip("/\\")) + ".ori.npy")


def affine_path(results_dir: PathLike, network_version: str, image_path: str) -> Path:
    """``<results>/<version>/<image path>.aff.npy``: the keypoints' affine shapes (N x 2 x 2
    float32, :mod:`hardnet.affnet`'s convention), next to :func:`feature_paths` (written only
    with an affine-shape estimator; ``.kpt.npy`` stays N x 4)."""
    return Path(str(Path(results_dir) / network_version / image_path.lstrip("/\\")) + ".aff.npy")


def image_folders(spec) -> List[Path]:
    """The photo folders named by ``spec``: one path, several joined by ``os.pathsep``
    (``a:b`` on POSIX), or a sequence of paths."""
    parts = str(spec).split(os.pathsep) if isinstance(spec, (str, Path)) else [str(x) for x in spec]
    folders = [Path(x) for x in parts if x.strip()]
    if not folders:
        raise ValueError("no image folder given")
    return folders


def images_root(spec) -> Path:
    """The deepest folder holding every folder of ``spec`` (the folder itself when only one)."""
    return Path(os.path.commonpath([str(f.resolve()) for f in image_folders(spec)]))


def list_images(folder) -> List[Path]:
    """Every image below the folder(s) of ``folder`` (see :func:`image_folders`), sorted per folder."""
    files: List[Path] = []
    for f in image_folders(folder):
        if not f.is_dir():
            raise FileNotFoundError(f"image folder not found: {f}")
        found = sorted(p for p in f.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {f}")
        files += [p.resolve() for p in found] if len(image_folders(folder)) > 1 else found
    return files


def relative_image_names(folder: PathLike) -> List[str]:
    """Every image below ``folder`` (recursive, :data:`IMAGE_EXTENSIONS`) by its path relative
    to it (``/``-separated), sorted: the names of a collection (hloc's convention).
    ``FileNotFoundError`` / ``NotADirectoryError`` / ``ValueError`` name the folder."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"not a folder (an image folder is expected): {d}")
    return sorted(p.relative_to(d).as_posix() for p in list_images(d))


def image_source(spec) -> Tuple[List[Path], Path]:
    """``(files, root)`` of a photo source (one folder or several, see :func:`image_folders`):
    every image, and the folder their relative paths are taken from in a dataset manifest
    (the folder itself, or the deepest folder holding all of them)."""
    folders = image_folders(spec)
    return list_images(spec), (folders[0] if len(folders) == 1 else images_root(spec))


def resolve_image_path(line: str, data_dir: Optional[PathLike] = None, prefix: str = DEFAULT_PREFIX) -> Path:
    """Where the image of an image-list line is, given a dataset folder.

    Without ``data_dir`` the line is used as written. With ``data_dir``, a leading
    ``<prefix>/`` component is replaced by ``data_dir`` (so the official list works for
    data stored anywhere); other relative lines are taken relative to ``data_dir``.
    """
    if data_dir is None:
        return Path(line)
    pre = prefix.strip("/") + "/"
    rel = line[len(pre):] if prefix and line.startswith(pre) else line
    return Path(data_dir) / rel


def locate_image(line: str, list_dir: Optional[PathLike] = None, data_dir: Optional[PathLike] = None) -> Path:
    """The image of an image-list line, the same way for every script: with ``data_dir``,
    :func:`resolve_image_path`; otherwise an absolute or existing relative path as written,
    else the path relative to the list's folder ``list_dir``."""
    if data_dir is not None:
        return resolve_image_path(line, data_dir)
    p = Path(line)
    if p.is_absolute() or p.exists() or list_dir is None:
        return p
    alt = Path(list_dir) / p
    return alt if alt.exists() else p
