"""Features and matches in hloc's HDF5 layout (so hloc's reconstruction and localisation
scripts read them unchanged), with ``h5py``.

``features.h5``: one group per image, named by the image's path relative to the image
folder (``/`` in a name makes nested groups, as in hloc), holding

* ``keypoints``: (N, 2) float32 x, y;
* ``descriptors``: (D, N) float32 (hloc stores descriptors transposed);
* ``scores``: (N,) float32 detector scores;
* ``image_size``: (2,) int ``(width, height)`` of the original image;
* and, beyond hloc's keys (ignored by it), ``scales``: (N,) float32 Key.Net scales, and
  ``orientations``: (N,) float32 degrees when the features are oriented (project convention:
  image coordinates, OpenCV's ``KeyPoint.angle``; kornia's LAF angle is the negative).

``matches.h5``: one group per pair, named by :func:`names_to_pair` (hloc's
``name0.replace('/', '-') + '/' + name1.replace('/', '-')``), holding ``matches0`` (N0,)
int32: the index in image 1 matched to each keypoint of image 0, -1 when unmatched; and
``matching_scores0`` (N0,) float32 (0 when unmatched).

Pixel convention. hloc's ``features.h5`` stores keypoints with the centre of the top-left
pixel at (0, 0) (OpenCV's convention, and ours: ``.kpt.npy`` files use integer pixel
centres), and hloc adds 0.5 when it imports them into a COLMAP database, whose convention
puts the top-left pixel's centre at (0.5, 0.5) (its corner at the origin). So keypoints
go into ``features.h5`` unchanged, and :func:`to_colmap` (+0.5) is applied only when
writing a COLMAP database (``keynet.pipeline.reconstruction``), exactly as hloc does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

PathLike = Union[str, os.PathLike]
#: COLMAP's pixel centres are at half-integers: ``x_colmap = x_ours + 0.5``.
COLMAP_PIXEL_OFFSET = 0.5
#: File attribute (informative; hloc ignores file attributes).
CONVENTION_NOTE = "keypoints: x, y with the centre of the top-left pixel at (0, 0) (hloc/OpenCV); COLMAP = +0.5"
COMPLETE_ATTR = "complete"


def to_colmap(xy: np.ndarray) -> np.ndarray:
    """Our / hloc pixel coordinates -> COLMAP's (top-left pixel centre at (0.5, 0.5))."""
    return np.asarray(xy, dtype=np.float64) + COLMAP_PIXEL_OFFSET


def from_colmap(xy: np.ndarray) -> np.ndarray:
    """COLMAP pixel coordinates -> ours / hloc's."""
    return np.asarray(xy, dtype=np.float64) - COLMAP_PIXEL_OFFSET


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """Group name of a pair in ``matches.h5`` (hloc's convention)."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


# ----------------------------------------------------------------------------- features
def write_features(fd: h5py.File, name: str, keypoints: np.ndarray, descriptors: Optional[np.ndarray],
                   image_size: Tuple[int, int], scores: Optional[np.ndarray] = None,
                   scales: Optional[np.ndarray] = None, orientations: Optional[np.ndarray] = None,
                   lafs: Optional[np.ndarray] = None) -> None:
    """Write one image's features into an open ``features.h5`` (replacing any previous
    group of that name). ``keypoints``: (N, >=2) our convention (x, y first); a Key.Net
    (N, 4) array x, y, scale, score also fills ``scores`` and ``scales`` when they are not
    given. ``descriptors``: (N, D) (stored transposed, D x N); ``image_size``: (width, height);
    ``orientations``: (N,) degrees, stored when given; ``lafs``: (N, 2, 3) the whole local
    affine frames in kornia's convention (centre, scale, affine shape and orientation:
    :func:`hardnet.patches.patch_lafs`), stored as ``lafs`` when given (features with an
    affine shape); hloc ignores datasets it does not know.
    The group gets the attribute ``complete`` last: a group without it (an interrupted
    write) is treated as missing by :func:`complete_names`.
    """
    k = np.asarray(keypoints, dtype=np.float64)
    if k.ndim != 2 or k.shape[1] < 2:
        raise ValueError(f"{name}: keypoints must be (N, >=2), got shape {k.shape}")
    n = len(k)
    if scores is None:
        scores = k[:, 3] if k.shape[1] >= 4 else np.ones(n)
    if scales is None and k.shape[1] >= 3:
        scales = k[:, 2]
    if name in fd:
        del fd[name]
    g = fd.create_group(name)
    g.create_dataset("keypoints", data=k[:, :2].astype(np.float32))
    if descriptors is not None:
        d = np.asarray(descriptors, dtype=np.float32)
        if d.ndim != 2 or d.shape[0] != n:
            raise ValueError(f"{name}: descriptors must be (N={n}, D), got shape {d.shape}")
        g.create_dataset("descriptors", data=np.ascontiguousarray(d.T))
    g.create_dataset("scores", data=np.asarray(scores, dtype=np.float32).reshape(n))
    if scales is not None:
        g.create_dataset("scales", data=np.asarray(scales, dtype=np.float32).reshape(n))
    if orientations is not None:
        g.create_dataset("orientations", data=np.asarray(orientations, dtype=np.float32).reshape(n))
    if lafs is not None:
        g.create_dataset("lafs", data=np.asarray(lafs, dtype=np.float32).reshape(n, 2, 3))
    g.create_dataset("image_size", data=np.asarray(image_size, dtype=np.int64).reshape(2))
    g.attrs[COMPLETE_ATTR] = 1
    fd.attrs["keypoint_convention"] = CONVENTION_NOTE


def read_features(path_or_file: Union[PathLike, h5py.File], name: str) -> Dict[str, np.ndarray]:
    """One image's features: ``keypoints`` (N, 2) float64 (our/hloc convention),
    ``descriptors`` (N, D) float32 (transposed back) or absent, ``scores`` (N,),
    ``scales`` and ``orientations`` (N,) and ``lafs`` (N, 2, 3) when stored, ``image_size``
    (width, height)."""
    if isinstance(path_or_file, h5py.File):
        return _read_features(path_or_file, name)
    with h5py.File(str(path_or_file), "r") as fd:
        return _read_features(fd, name)


def _read_features(fd: h5py.File, name: str) -> Dict[str, np.ndarray]:
    if name not in fd:
        raise KeyError(f"no features for image {name!r} in {fd.filename}")
    g = fd[name]
    out = {"keypoints": g["keypoints"][()].astype(np.float64), "scores": g["scores"][()],
           "image_size": g["image_size"][()]}
    if "descriptors" in g:
        out["descriptors"] = np.ascontiguousarray(g["descriptors"][()].T)
    for key in ("scales", "orientations", "lafs"):
        if key in g:
            out[key] = g[key][()]
    return out


def complete_names(fd: h5py.File) -> List[str]:
    """Image names with a complete feature group (nested names included)."""
    names: List[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and obj.attrs.get(COMPLETE_ATTR, 0) == 1 and "keypoints" in obj:
            names.append(name)

    fd.visititems(visit)
    return sorted(names)


def keypoints_for_colmap(path_or_file: Union[PathLike, h5py.File], name: str) -> np.ndarray:
    """(N, 2) float32 keypoints of ``name`` in COLMAP's convention (+0.5), ready for
    ``pycolmap.Database.write_keypoints``."""
    return to_colmap(read_features(path_or_file, name)["keypoints"]).astype(np.float32)


# ----------------------------------------------------------------------------- matches
def matches_to_matches0(matches: np.ndarray, scores: Optional[np.ndarray], n0: int) -> Tuple[np.ndarray, np.ndarray]:
    """(K, 2) index pairs (+ (K,) scores) -> hloc's ``matches0`` (n0,) int32 (-1 = none)
    and ``matching_scores0`` (n0,) float32."""
    m = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    if len(m) and (m[:, 0].min() < 0 or m[:, 0].max() >= n0):
        raise ValueError(f"match indices out of range for {n0} keypoints")
    if len(np.unique(m[:, 0])) != len(m):
        raise ValueError("a keypoint of image 0 is matched twice: matches0 holds one match per keypoint")
    m0 = np.full(int(n0), -1, dtype=np.int32)
    s0 = np.zeros(int(n0), dtype=np.float32)
    m0[m[:, 0]] = m[:, 1]
    s0[m[:, 0]] = 1.0 if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    return m0, s0


def matches0_to_matches(matches0: np.ndarray, scores0: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """hloc's ``matches0`` (+ scores) -> (K, 2) int64 index pairs and (K,) float32 scores."""
    m0 = np.asarray(matches0).reshape(-1)
    i = np.flatnonzero(m0 > -1)
    pairs = np.stack([i, m0[i]], 1).astype(np.int64)
    s = np.ones(len(i), np.float32) if scores0 is None else np.asarray(scores0, np.float32).reshape(-1)[i]
    return pairs, s


def write_matches(fd: h5py.File, name0: str, name1: str, matches: np.ndarray, scores: Optional[np.ndarray],
                  n0: int) -> None:
    """Write one pair's matches into an open ``matches.h5`` (replacing a previous entry)."""
    key = names_to_pair(name0, name1)
    m0, s0 = matches_to_matches0(matches, scores, n0)
    if key in fd:
        del fd[key]
    g = fd.create_group(key)
    g.create_dataset("matches0", data=m0)
    g.create_dataset("matching_scores0", data=s0)
    g.attrs[COMPLETE_ATTR] = 1


def has_matches(fd: h5py.File, name0: str, name1: str) -> bool:
    """Whether a complete entry exists for the pair (in either order)."""
    for key in (names_to_pair(name0, name1), names_to_pair(name1, name0)):
        if key in fd and fd[key].attrs.get(COMPLETE_ATTR, 0) == 1:
            return True
    return False


def read_matches(path_or_file: Union[PathLike, h5py.File], name0: str, name1: str) -> Tuple[np.ndarray, np.ndarray]:
    """(K, 2) index pairs (image 0, image 1) and (K,) scores of a pair, stored in either
    order (hloc's ``find_pair`` also accepts both)."""
    if not isinstance(path_or_file, h5py.File):
        with h5py.File(str(path_or_file), "r") as fd:
            return read_matches(fd, name0, name1)
    fd = path_or_file
    key = names_to_pair(name0, name1)
    if key in fd:
        g = fd[key]
        return matches0_to_matches(g["matches0"][()], g["matching_scores0"][()])
    key = names_to_pair(name1, name0)
    if key in fd:
        g = fd[key]
        m, s = matches0_to_matches(g["matches0"][()], g["matching_scores0"][()])
        return m[:, ::-1].copy(), s
    raise KeyError(f"no matches for pair ({name0}, {name1}) in {fd.filename}")


def open_h5(path: PathLike, mode: str = "a") -> h5py.File:
    """Open an HDF5 file; an unreadable (e.g. truncated by an interrupted run) file opened
    for appending is moved aside to ``<name>.corrupt`` and a new one started."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        return h5py.File(str(p), mode)
    except OSError:
        if mode != "a" or not p.exists():
            raise
        p.replace(p.with_name(p.name + ".corrupt"))
        return h5py.File(str(p), mode)


def merge_feature_files(parts: Sequence[PathLike], dst: PathLike, remove: bool = True) -> int:
    """Copy the complete image groups of the ``features.h5`` files ``parts`` (e.g. the
    ``features.rank<r>.h5`` of a ``torchrun`` extraction) into ``dst``, with their
    ``extractor`` fingerprint (``ValueError`` naming the files when they differ, or differ
    from ``dst``'s); existing groups of ``dst`` are replaced. With ``remove`` each part is
    deleted once copied. Returns the number of groups copied."""
    parts = [Path(p) for p in parts if Path(p).exists()]
    copied = 0
    with open_h5(dst, "a") as out:
        for part in parts:
            with h5py.File(str(part), "r") as src:
                fp = src.attrs.get("extractor")
                have = out.attrs.get("extractor")
                if fp is not None and have is not None and (len(out.keys()) or copied) and fp != have:
                    raise ValueError(f"{part} and {dst} hold features of different settings; not merged")
                if fp is not None:
                    out.attrs["extractor"] = fp
                for name in complete_names(src):
                    if name in out:
                        del out[name]
                    parent, _, leaf = name.rpartition("/")
                    src.copy(src[name], out.require_group(parent) if parent else out, name=leaf)
                    copied += 1
            out.flush()
            if remove:
                part.unlink()
    return copied


def iter_pairs_in(fd: h5py.File) -> Iterable[str]:
    """Pair keys (``a/b``) of a ``matches.h5``."""
    for a in fd:
        for b in fd[a]:
            yield f"{a}/{b}"


def match_counts(path: PathLike, pairs: Sequence[Tuple[str, str]]) -> List[int]:
    """The number of matches of each pair of ``pairs`` in the ``matches.h5`` at ``path``
    (stored in either order)."""
    with h5py.File(str(path), "r") as fd:
        return [int(len(read_matches(fd, a, b)[0])) for a, b in pairs]
