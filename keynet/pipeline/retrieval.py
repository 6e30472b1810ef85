"""Image retrieval for the pairs of a large collection (``--pairs retrieval``): each image
gets a global descriptor aggregated from its own Key.Net + HardNet features (VLAD), and is
paired with its ``K`` nearest images. No retrieval network and no weights beyond the
features': the codebook is learned from the collection's own descriptors, so it works
offline on any collection.

Stages of :func:`retrieval_pairs`, every one cached under ``work_dir`` (``OUT/retrieval``
in ``keynet reconstruct`` / ``keynet match``) and reused when its inputs are the same:

1. **codebook** -> ``codebook.npy`` (``k x D`` float32, the visual words) + ``codebook.json``
   (how it was made): k-means (``faiss.Kmeans``, fixed seed) on a seeded subsample of the
   collection's descriptors, spread evenly over the images (at most
   :data:`POINTS_PER_CENTROID` per centroid, faiss's own cap). A codebook given by
   ``RetrievalConfig.codebook`` (a ``.npy`` from another collection) is used instead;
2. **global descriptors** -> ``global.npy`` (``n x kD`` float32, written as a memory map
   then renamed: atomic, bounded memory) + ``global.json`` (the image names and the
   fingerprint of codebook and features): :func:`vlad` of each image's descriptors;
3. **pairs** -> ``pairs.txt`` (hloc / COLMAP ``name0 name1`` lines) + ``pairs.json``: each
   image with its ``K`` nearest images by inner product of the global descriptors (exact
   search with ``faiss.IndexFlatIP``, the database scanned in blocks so memory stays
   bounded), the unordered pairs deduplicated.

VLAD (Jegou et al., "Aggregating local descriptors into a compact image representation",
CVPR 2010; TPAMI 2012), as :func:`vlad` computes it: each descriptor is assigned to its
nearest centroid (L2), the residuals ``x - c_k`` are summed per centroid, each component
is power-normalised (signed square root, Jegou et al. 2012), each centroid's block is
L2-normalised (intra-normalisation, Arandjelovic & Zisserman, "All about VLAD", CVPR 2013;
an empty block stays zero) and the whole vector is L2-normalised. The inner product of
two such vectors is their cosine similarity.

Defaults (from the literature, not tuned to any collection): 64 centroids (Jegou et al.'s
main setting, k = 64, D = 128: 8192-dimensional vectors, 32 KB an image); the k-means
sample capped at 256 descriptors per centroid (16384), faiss's ``max_points_per_centroid``;
20 k-means iterations (faiss's default 25 and Jegou et al.'s small budgets are both far
past convergence for this purpose); seed 0; ``K = 10`` neighbours, between hloc's SfM
example (5) and its localisation setting (20-50); pairs grow as ``n * K`` (at most
``2 K / (n - 1)`` of the exhaustive pairs).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import faiss
import h5py
import numpy as np
from tqdm import tqdm

from keynet.base.files import atomic_save_npy, atomic_write_bytes

from . import hloc_io
from .pairs import Pair, dedupe_pairs, read_pairs, write_pairs

PathLike = Union[str, os.PathLike]
T = TypeVar("T")

DEFAULT_NUM_NEIGHBOURS = 10
DEFAULT_NUM_CENTROIDS = 64
#: faiss's ``max_points_per_centroid``: the k-means sample is at most this many descriptors a centroid.
POINTS_PER_CENTROID = 256
DEFAULT_KMEANS_ITERATIONS = 20
#: Version of the global-descriptor definition (part of the cache fingerprints).
VLAD_VERSION = "vlad-ssr-intra-l2-v1"
#: Rows of the database scanned at once by :func:`nearest_neighbours` (bounded memory).
SEARCH_BLOCK = 4096


class RetrievalError(ValueError):
    """Retrieval cannot run on these inputs (the message names the culprit)."""


@dataclass
class RetrievalConfig:
    """Retrieval pairs: ``num_neighbours`` (K, the images each image is paired with),
    ``num_centroids`` (VLAD's visual words), ``max_descriptors`` (the k-means sample;
    ``None``: ``num_centroids * POINTS_PER_CENTROID``), ``kmeans_iterations``, ``seed``
    (the sample and k-means) and ``codebook`` (a ``.npy`` codebook to reuse instead of
    learning one; its size sets ``num_centroids``)."""

    num_neighbours: int = DEFAULT_NUM_NEIGHBOURS
    num_centroids: int = DEFAULT_NUM_CENTROIDS
    max_descriptors: Optional[int] = None
    kmeans_iterations: int = DEFAULT_KMEANS_ITERATIONS
    seed: int = 0
    codebook: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("num_neighbours", "num_centroids", "kmeans_iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RetrievalError(f"retrieval {name} must be an integer >= 1, got {v!r}")
        if self.max_descriptors is not None and int(self.max_descriptors) < int(self.num_centroids):
            raise RetrievalError(f"retrieval max_descriptors ({self.max_descriptors}) must be at least "
                                 f"num_centroids ({self.num_centroids})")

    @property
    def sample_size(self) -> int:
        if self.max_descriptors is not None:
            return int(self.max_descriptors)
        return int(self.num_centroids) * POINTS_PER_CENTROID


@dataclass
class RetrievalResult:
    """What :func:`retrieval_pairs` produced: the pairs, the files, which stages were
    reused from the cache, and the seconds of each stage."""

    pairs: List[Pair]
    pairs_path: Path
    codebook_path: Path
    global_path: Path
    reused: Dict[str, bool] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- VLAD
def assign(descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (L2) of each descriptor, (N,) int64."""
    x = np.asarray(descriptors, np.float32)
    c = np.asarray(codebook, np.float32)
    d2 = (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)  # + |x|^2, the same for every centroid
    return np.argmin(d2, axis=1)


def vlad(descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The VLAD vector (``k * D``, float32) of an image's ``descriptors`` (N, D) with
    ``codebook`` (k, D): per-centroid sums of residuals, signed square root, per-centroid
    L2 normalisation, global L2 normalisation (the module doc). No descriptors: zeros."""
    c = np.asarray(codebook, np.float32)
    k, dim = c.shape
    x = np.asarray(descriptors, np.float32).reshape(-1, dim)
    if not len(x):
        return np.zeros(k * dim, np.float32)
    a = assign(x, c)
    onehot = np.zeros((len(x), k), np.float64)
    onehot[np.arange(len(x)), a] = 1.0
    # residuals first, summed in float64: a sum of near-zero residuals is what the square root magnifies
    v = onehot.T @ (x.astype(np.float64) - c.astype(np.float64)[a])
    v = np.sign(v) * np.sqrt(np.abs(v))
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    v = v.reshape(-1)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


# ----------------------------------------------------------------------------- codebook
def kmeans_codebook(sample: np.ndarray, num_centroids: int, iterations: int = DEFAULT_KMEANS_ITERATIONS,
                    seed: int = 0) -> np.ndarray:
    """``num_centroids`` k-means centroids (k, D) float32 of ``sample`` (N, D) by ``faiss.Kmeans``."""
    x = np.ascontiguousarray(sample, np.float32)
    if x.ndim != 2 or len(x) < int(num_centroids):
        raise RetrievalError(f"{len(x)} descriptor(s) cannot make {num_centroids} centroids: the collection has too "
                             "few features for this codebook (fewer centroids, more points, or a codebook "
                             "learned elsewhere)")
    km = faiss.Kmeans(x.shape[1], int(num_centroids), niter=int(iterations), seed=int(seed), verbose=False,
                      max_points_per_centroid=max(POINTS_PER_CENTROID, math.ceil(len(x) / int(num_centroids))))
    km.train(x)
    return np.ascontiguousarray(km.centroids, np.float32)


def _descriptors(ff: h5py.File, name: str, features_path: PathLike) -> np.ndarray:
    if name not in ff:
        raise RetrievalError(f"no features for image {name} in {features_path}")
    g = ff[name]
    if "descriptors" not in g:
        raise RetrievalError(f"no descriptors for image {name} in {features_path} (retrieval needs descriptors)")
    return np.ascontiguousarray(g["descriptors"][()].T, np.float32)


def sample_descriptors(features_path: PathLike, names: Sequence[str], max_descriptors: int, seed: int = 0,
                       progress: bool = False) -> np.ndarray:
    """A seeded subsample of the descriptors of ``names`` in ``features_path``, spread
    evenly: at most ``ceil(max_descriptors / len(names))`` of each image (all of an image
    with fewer), so no image dominates the codebook."""
    rng = np.random.default_rng(int(seed))
    quota = max(1, math.ceil(int(max_descriptors) / max(1, len(names))))
    parts = []
    with hloc_io.open_h5(features_path, "r") as ff:
        for name in tqdm(names, desc="retrieval: codebook sample", unit="image", disable=not progress):
            d = _descriptors(ff, name, features_path)
            if len(d) > quota:
                d = d[np.sort(rng.choice(len(d), quota, replace=False))]
            parts.append(d)
    dim = parts[0].shape[1] if parts else 0
    return np.concatenate(parts).reshape(-1, dim) if parts else np.zeros((0, 0), np.float32)


def save_codebook(path: PathLike, codebook: np.ndarray, meta: Optional[Dict] = None) -> Path:
    """Write ``codebook`` (k, D) to ``path`` (``.npy``, atomic) and, with ``meta``, its
    description beside it (``<path stem>.json``)."""
    p = Path(path)
    atomic_save_npy(p, np.asarray(codebook, np.float32))
    if meta is not None:
        atomic_write_bytes(p.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True).encode())
    return p


def load_codebook(path: PathLike, dim: Optional[int] = None) -> np.ndarray:
    """A codebook saved by :func:`save_codebook` (any ``.npy`` of shape (k, D)); with
    ``dim``, the descriptors' dimension it must match. :class:`RetrievalError` naming the
    file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise RetrievalError(f"codebook not found: {p}")
    try:
        c = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RetrievalError(f"codebook {p} is not a readable .npy file ({e})") from None
    if c.ndim != 2 or not np.issubdtype(c.dtype, np.floating) or min(c.shape) < 1:
        raise RetrievalError(f"codebook {p} must be a (centroids, dimension) float array, got shape {c.shape} "
                             f"of {c.dtype}")
    if not np.isfinite(c).all():
        raise RetrievalError(f"codebook {p} holds non-finite values")
    if dim is not None and c.shape[1] != int(dim):
        raise RetrievalError(f"codebook {p} has {c.shape[1]}-dimensional centroids, the descriptors are "
                             f"{int(dim)}-dimensional (a codebook of other features)")
    return np.ascontiguousarray(c, np.float32)


# ----------------------------------------------------------------------------- search
def nearest_neighbours(vectors: np.ndarray, k: int, block: int = SEARCH_BLOCK,
                       progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """For each row of ``vectors`` (n, d; an array or a memory map), the ``k`` other rows of
    largest inner product: (n, k) indices and similarities, best first (``k`` is capped at
    ``n - 1``). Exact (``faiss.IndexFlatIP``), scanning the database in blocks of
    ``block`` rows so that memory stays at two blocks."""
    n = len(vectors)
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    ids = np.zeros((n, k), np.int64)
    sims = np.zeros((n, k), np.float32)
    starts = range(0, n, block)
    for q0 in tqdm(starts, desc="retrieval: search", unit="block", disable=not progress or n <= block):
        q = np.ascontiguousarray(vectors[q0:q0 + block], np.float32)
        heap = faiss.ResultHeap(len(q), k + 1, keep_max=True)
        for b0 in starts:
            b = np.ascontiguousarray(vectors[b0:b0 + block], np.float32)
            index = faiss.IndexFlatIP(b.shape[1])
            index.add(b)
            d, i = index.search(q, min(k + 1, len(b)))
            heap.add_result(d, i + b0)
        heap.finalize()
        for r in range(len(q)):
            me = q0 + r
            keep = heap.I[r] != me  # self is among the k + 1 unless tied with duplicates: then the last goes
            ids[me], sims[me] = heap.I[r][keep][:k], heap.D[r][keep][:k]
    return ids, sims


def knn_pairs(names: Sequence[str], vectors: np.ndarray, k: int, progress: bool = False) -> List[Pair]:
    """Each image with its ``k`` nearest images (inner product of ``vectors``, one row per
    name), in name order then similarity order; unordered pairs deduplicated."""
    if int(k) < 1:
        raise RetrievalError(f"the number of neighbours must be >= 1, got {k}")
    if len(names) != len(vectors):
        raise RetrievalError(f"{len(names)} names but {len(vectors)} global descriptors")
    ids, _ = nearest_neighbours(vectors, k, progress=progress)
    names = list(names)
    return dedupe_pairs((names[i], names[int(j)]) for i in range(len(names)) for j in ids[i] if int(j) != i)


# ----------------------------------------------------------------------------- the stage
def _digest(*parts: Union[str, bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _read_json(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def _cached(path: Path, meta_path: Path, meta: Dict, load: Callable[[Path], T], errors, overwrite: bool
            ) -> Optional[T]:
    """``load(path)`` when ``path`` exists and was made from ``meta`` (the JSON at ``meta_path``)
    and loads without ``errors``; else ``None`` (to be computed again)."""
    if overwrite or _read_json(meta_path) != meta or not path.is_file():
        return None
    try:
        return load(path)
    except errors:
        return None


def global_descriptors(features_path: PathLike, names: Sequence[str], codebook: np.ndarray, out_path: PathLike,
                       reuse: Optional[Dict[str, np.ndarray]] = None, progress: bool = False) -> np.ndarray:
    """:func:`vlad` of every image of ``names`` written to ``out_path`` (``.npy``, a memory
    map filled image by image, then renamed into place); ``reuse``: rows already computed
    (by name) with the same codebook and features. Returns the file, memory-mapped."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    k, dim = codebook.shape
    tmp = out_path.with_name(out_path.name + ".tmp.npy")
    arr = np.lib.format.open_memmap(str(tmp), mode="w+", dtype=np.float32, shape=(len(names), k * dim))
    try:
        with hloc_io.open_h5(features_path, "r") as ff:
            for i, name in enumerate(tqdm(names, desc="retrieval: global descriptors", unit="image",
                                          disable=not progress)):
                if reuse is not None and name in reuse:
                    arr[i] = reuse[name]
                    continue
                d = _descriptors(ff, name, features_path)
                if d.shape[1] != dim:
                    raise RetrievalError(f"the codebook has {dim}-dimensional centroids, the descriptors of {name} "
                                         f"in {features_path} are {d.shape[1]}-dimensional")
                arr[i] = vlad(d, codebook)
        arr.flush()
        del arr
        os.replace(tmp, out_path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return np.load(out_path, mmap_mode="r")


def stage_codebook(features_path: PathLike, names: Sequence[str], work: Path, cfg: RetrievalConfig, dim: int,
                   features_fp: str, names_fp: str, overwrite: bool, progress: bool, log: Callable[[str], None]
                   ) -> Tuple[np.ndarray, Path, bool]:
    """Step 1 of :func:`retrieval_pairs`: the given codebook, or the one cached in
    ``work/codebook.npy`` when made from the same inputs, or a new one (k-means of a sample of
    the descriptors). Returns ``(codebook, its path, reused)``."""
    codebook_path = work / "codebook.npy"
    if cfg.codebook is not None:
        codebook = load_codebook(cfg.codebook, dim)
        log(f"retrieval: codebook {Path(cfg.codebook)} ({len(codebook)} centroids) given")
        return codebook, Path(cfg.codebook), True
    meta = {"method": "faiss.Kmeans", "num_centroids": int(cfg.num_centroids), "dim": dim,
            "sample": cfg.sample_size, "iterations": int(cfg.kmeans_iterations), "seed": int(cfg.seed),
            "features": features_fp, "images": names_fp, "num_images": len(names)}
    codebook = _cached(codebook_path, codebook_path.with_suffix(".json"), meta,
                       lambda p: load_codebook(p, dim), RetrievalError, overwrite)
    if codebook is not None:
        log(f"retrieval: codebook reused from {codebook_path}")
        return codebook, codebook_path, True
    sample = sample_descriptors(features_path, names, cfg.sample_size, cfg.seed, progress)
    codebook = kmeans_codebook(sample, cfg.num_centroids, cfg.kmeans_iterations, cfg.seed)
    del sample
    save_codebook(codebook_path, codebook, meta)
    return codebook, codebook_path, False


def stage_global(features_path: PathLike, names: List[str], work: Path, codebook: np.ndarray, features_fp: str,
                 overwrite: bool, progress: bool, log: Callable[[str], None]) -> Tuple[np.ndarray, str, bool]:
    """Step 2 of :func:`retrieval_pairs`: the global descriptors in ``work/global.npy``, reused
    (whole, or the rows of the images already there) when made with the same codebook and
    features. Returns ``(vectors, their fingerprint, reused)``."""
    global_path = work / "global.npy"
    gfp = _digest(VLAD_VERSION, features_fp, codebook.tobytes())
    old = _read_json(work / "global.json")
    vectors = None
    reuse_rows: Optional[Dict[str, np.ndarray]] = None
    if not overwrite and old and old.get("fingerprint") == gfp and global_path.is_file():
        try:
            cached = np.load(global_path, mmap_mode="r")
            if cached.shape == (len(old.get("names", [])), codebook.size):
                if old["names"] == names:
                    vectors = cached
                else:
                    pos = {n: i for i, n in enumerate(old["names"])}
                    reuse_rows = {n: np.array(cached[pos[n]]) for n in names if n in pos}
        except (OSError, ValueError):
            vectors = None
    if vectors is not None:
        log(f"retrieval: {len(names)} global descriptor(s) reused from {global_path}")
        return vectors, gfp, True
    vectors = global_descriptors(features_path, names, codebook, global_path, reuse_rows, progress)
    _write_json(work / "global.json", {"fingerprint": gfp, "version": VLAD_VERSION, "names": names})
    if reuse_rows:
        log(f"retrieval: {len(reuse_rows)} global descriptor(s) reused, {len(names) - len(reuse_rows)} computed")
    return vectors, gfp, False


def stage_pairs(names: List[str], work: Path, vectors: np.ndarray, gfp: str, names_fp: str, cfg: RetrievalConfig,
                overwrite: bool, progress: bool) -> Tuple[List[Pair], bool]:
    """Step 3 of :func:`retrieval_pairs`: each image with its nearest neighbours, in
    ``work/pairs.txt`` (reused when made from the same global descriptors). Returns ``(pairs, reused)``."""
    pairs_path = work / "pairs.txt"
    pmeta = {"global": gfp, "images": names_fp, "num_neighbours": int(cfg.num_neighbours)}
    pairs = _cached(pairs_path, work / "pairs.json", pmeta, lambda p: read_pairs(p, names), ValueError, overwrite)
    if pairs is not None:
        return pairs, True
    pairs = knn_pairs(names, vectors, cfg.num_neighbours, progress)
    tmp = pairs_path.with_name(pairs_path.name + ".tmp")
    write_pairs(tmp, pairs)
    os.replace(tmp, pairs_path)
    _write_json(work / "pairs.json", pmeta)
    return pairs, False


def retrieval_pairs(features_path: PathLike, names: Sequence[str], work_dir: PathLike,
                    cfg: Optional[RetrievalConfig] = None, overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print) -> RetrievalResult:
    """The retrieval stage (module doc): codebook, global descriptors and pairs of
    ``names`` from the features of ``features_path``, cached under ``work_dir`` and reused
    when made from the same inputs (``overwrite``: recompute all). Raises
    :class:`RetrievalError` naming the culprit (missing descriptors, a codebook of another
    dimension, too few descriptors for the codebook)."""
    cfg = cfg or RetrievalConfig()
    names = list(names)
    if len(names) < 2:
        raise RetrievalError(f"{len(names)} image(s): retrieval pairs need at least 2")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}
    reused: Dict[str, bool] = {}
    with hloc_io.open_h5(features_path, "r") as ff:
        features_fp = str(ff.attrs.get("extractor", ""))
        dim = int(_descriptors(ff, names[0], features_path).shape[1])
    names_fp = _digest(*names)
    t = time.time()
    codebook, codebook_path, reused["codebook"] = stage_codebook(features_path, names, work, cfg, dim, features_fp,
                                                                 names_fp, overwrite, progress, log)
    seconds["codebook"] = time.time() - t
    t = time.time()
    vectors, gfp, reused["global"] = stage_global(features_path, names, work, codebook, features_fp, overwrite,
                                                  progress, log)
    seconds["global"] = time.time() - t
    t = time.time()
    pairs, reused["pairs"] = stage_pairs(names, work, vectors, gfp, names_fp, cfg, overwrite, progress)
    seconds["pairs"] = time.time() - t
    del vectors
    n = len(names)
    log(f"retrieval: {len(pairs)} pairs ({int(cfg.num_neighbours)} neighbours an image; exhaustive: "
        f"{n * (n - 1) // 2}) in {work / 'pairs.txt'}")
    return RetrievalResult(pairs, work / "pairs.txt", codebook_path, work / "global.npy", reused, seconds)


__all__ = [
    "DEFAULT_KMEANS_ITERATIONS", "DEFAULT_NUM_CENTROIDS", "DEFAULT_NUM_NEIGHBOURS", "POINTS_PER_CENTROID",
    "RetrievalConfig", "RetrievalError", "RetrievalResult", "assign", "global_descriptors", "kmeans_codebook",
    "knn_pairs", "load_codebook", "nearest_neighbours", "retrieval_pairs", "sample_descriptors", "save_codebook",
    "vlad",
]
