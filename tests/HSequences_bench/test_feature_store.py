"""The shared feature store and method registry of the benchmarks: caches written in the
layout of the code before they were shared are reused as they are, and one error names the
registered methods."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import List

import numpy as np
import pytest

from HSequences_bench.feature_store import NpzStore, load_npz, method_folder, save_npz
from HSequences_bench.harness import rotation_methods as rm
from HSequences_bench.harness import wide_baseline_methods as wm
from HSequences_bench.harness import wide_baseline_run as wr
from HSequences_bench.harness.method_base import MethodError
from HSequences_bench.harness.registry import Registry
from HSequences_bench.harness.wide_baseline_method import Method as WideMethod
from HSequences_bench.rotation import ImageRef, Method as RotationMethod
from HSequences_bench.rotation_cache import FeatureStore, cache_path
from keynet.pipeline.config import MatcherConfig


def _sha(tag: str, n: int) -> str:
    return hashlib.sha1(tag.encode()).hexdigest()[:n]


def _old_npz(path: Path, **arrays) -> None:
    """A cache file as the code before the shared store wrote it (np.savez of the arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    path.write_bytes(buf.getvalue())


# ------------------------------------------------------------------------------- the store
def test_npz_store_computes_once_then_reuses_and_counts(tmp_path):
    calls: List[int] = []

    def compute():
        calls.append(1)
        return np.arange(3.0)
    store = NpzStore(tmp_path)
    path = store.path(method_folder("m", "n=3", 10), "a/b.npz", tag="n=3")
    assert path == tmp_path / f"m-{_sha('n=3', 10)}" / "a" / "b.npz"
    assert (path.parent.parent / "tag.txt").read_text() == "n=3\n"
    args = (lambda v: {"x": v}, lambda z: z["x"] if "x" in z else None)
    first = store.cached("features", [path], compute, *args)
    again = NpzStore(tmp_path)
    second = again.cached("features", [path], compute, *args)
    assert len(calls) == 1 and np.array_equal(first, second)
    assert store.counts == {"features": 1, "features_reused": 0}
    assert again.counts == {"features": 0, "features_reused": 1}
    NpzStore(tmp_path, overwrite=True).cached("features", [path], compute, *args)
    assert len(calls) == 2
    NpzStore(None).cached("features", [None], compute, *args)  # no disk cache
    assert len(calls) == 3


def test_npz_store_recomputes_unreadable_and_incomplete_files(tmp_path):
    warned: List[Path] = []
    store = NpzStore(tmp_path, on_unreadable=lambda p, e: warned.append(p))
    path = tmp_path / "m" / "f.npz"
    args = (lambda v: {"x": v}, lambda z: z["x"] if "x" in z else None)
    for content in (b"broken", b""):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        assert store.cached("features", [path], lambda: np.ones(2), *args).sum() == 2
        assert load_npz(path)["x"].sum() == 2  # rewritten
    assert warned == [path, path]
    save_npz(path, y=1)  # readable, lacking the array: computed again
    store.cached("features", [path], lambda: np.zeros(2), *args)
    assert store.counts == {"features": 3, "features_reused": 0}


# ------------------------------------------------------------------- caches of the older code
def test_rotation_cache_of_the_older_code_is_reused(tmp_path):
    """A file at the rotation cache's path of before (``<method>-<sha1(tag)[:10]>/<key>@<angle>.npz``)."""
    def extract(image):
        raise AssertionError("the cached features must be reused")
    method = RotationMethod("upright", extract, tag="keynet=abc n=300")
    ref = ImageRef(tmp_path / "missing.ppm", "data/s/1", 90.0)
    old = tmp_path / "cache" / f"upright-{_sha('keynet=abc n=300', 10)}" / "data" / "s" / "1@90.npz"
    kpts, desc, ori = np.ones((3, 4)), np.full((3, 8), 2.0, np.float32), np.array([1.0, 2.0, 3.0])
    _old_npz(old, keypoints=kpts, descriptors=desc, orientations=ori)
    assert cache_path(tmp_path / "cache", method, ref) == old
    store = FeatureStore(tmp_path / "cache")
    f = store(method, ref)
    assert store.extracted == 0 and store.reused == 1
    assert np.array_equal(f.keypoints, kpts) and np.array_equal(f.descriptors, desc)
    assert np.array_equal(f.orientations, ori)


def _wide_method() -> WideMethod:
    def make():
        raise AssertionError("the cached features must be reused")
    return WideMethod("keynet", "n=500", make, MatcherConfig(), 480, name="keynet-upright")


def test_wide_baseline_caches_of_the_older_code_are_reused(tmp_path):
    """Features, matches and estimates at the wide-baseline cache's paths of before."""
    method = _wide_method()
    tag = f"n=500 max_image_size=480 matcher={method.matcher.method}:{method.matcher.resolved_threshold}"
    assert method.tag == tag
    features = tmp_path / f"keynet-features-{_sha('n=500 max_image_size=480', 12)}" / "features"
    pair = tmp_path / f"keynet-{_sha(tag, 12)}"
    kpts = np.array([[1.0, 2.0, 3.0, 0.5], [4.0, 5.0, 3.0, 0.4]])
    _old_npz(features / "evd" / "1" / "a.npz", keypoints=kpts, descriptors=np.ones((2, 4), np.float32),
             size=np.array([640, 480]), seconds=0.25, x_views=np.array([0, 1]))
    # a features file of the oldest layout (under the method's own folder) is read too
    _old_npz(pair / "features" / "evd" / "2" / "a.npz", keypoints=kpts[:1], descriptors=np.ones((1, 4), np.float32),
             size=np.array([320, 240]), seconds=0.5)
    store = wr.Store(tmp_path)
    f1 = store.features(method, "evd/1/a", Path("missing1.png"))
    f2 = store.features(method, "evd/2/a", Path("missing2.png"))
    assert f1.size == (640, 480) and f1.seconds == 0.25 and np.array_equal(f1.extra["views"], [0, 1])
    assert np.array_equal(f1.keypoints, kpts) and f2.size == (320, 240) and len(f2.keypoints) == 1
    assert store.counts == {"features": 0, "features_reused": 2, "matches": 0, "matches_reused": 0}

    _old_npz(pair / "matches" / "evd" / "a.npz", matches=np.array([[0, 0]]), pts1=np.array([[1.0, 2.0]]),
             pts2=np.array([[3.0, 4.0]]), keypoints1=2, keypoints2=1, seconds=1.5)  # before the levels were kept
    model = np.diag([1.0, 2.0, 1.0])
    _old_npz(pair / "estimates" / "evd" / "a.H.magsac-0.5-0.999-100000.npz", model=model, inliers=7, seconds=0.1)
    case = wr.Case("evd", "a", "evd/a", "evd/1/a", "evd/2/a", Path("missing1.png"), Path("missing2.png"), None)
    pm = store.matches(method, case)
    assert (pm.keypoints1, pm.keypoints2, pm.seconds, pm.level) == (2, 1, 1.5, 0) and pm.level_seconds.size == 0
    assert np.array_equal(pm.pts2, [[3.0, 4.0]])
    m, inliers, seconds = store.estimate(method, case, pm)
    assert np.array_equal(m, model) and inliers == 7 and seconds == 0.1
    assert store.counts == {"features": 0, "features_reused": 2, "matches": 0, "matches_reused": 1}
    assert (pair / "tag.txt").read_text() == tag + "\n"


# ---------------------------------------------------------------------------- the registry
def test_registry_builds_by_name_and_names_the_methods():
    reg: Registry = Registry({"a": lambda x: ("a", x), "b": lambda x: ("b", x)}, hint=" or spec:...")
    assert reg.build("b", 3) == ("b", 3) and reg.names == ("a", "b")
    with pytest.raises(MethodError, match=r"unknown method 'c'; choose from a, b or spec:\.\.\.$"):
        reg.build("c", 1)
    with pytest.raises(MethodError, match="unknown method 'z'"):
        reg.check(["a", "z"])


def test_both_benchmarks_use_the_registry():
    assert isinstance(wm.METHODS, Registry) and isinstance(rm.METHODS, Registry)
    assert rm.METHODS.names == rm.METHOD_NAMES
    with pytest.raises(MethodError, match="unknown method 'surf'; choose from learned, gradient, upright"):
        rm.check_methods(["sift", "surf"], None, None)
    with pytest.raises(MethodError, match=r"unknown method 'surf'; choose from keynet-upright, .* or keynet:"):
        wm.build_method("surf", wm.MethodOptions())
    sift = wm.build_method("sift", wm.MethodOptions(num_points=10))
    assert sift.name == "sift" and not sift.loaded
    orb = rm.build_methods(["orb"], num_points=10)[0][0]
    assert orb.name == "orb" and orb.distance == "hamming"
