"""features.h5 / matches.h5 in hloc's layout (keynet.pipeline.hloc_io): round trips, the layout
hloc reads, and the pixel convention (hloc file = ours; COLMAP = +0.5)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from keynet.pipeline import hloc_io


def keynet_features(n=50, seed=0):
    rng = np.random.default_rng(seed)
    k = np.column_stack([rng.uniform(0, 640, n), rng.uniform(0, 480, n), rng.uniform(1, 5, n),
                         np.sort(rng.random(n))[::-1]])
    d = rng.standard_normal((n, 128)).astype(np.float32)
    return k, d / np.linalg.norm(d, axis=1, keepdims=True)


def test_lafs_layout(tmp_path):
    """``lafs``: (N, 2, 3) per image, row-major [[a, b, x], [c, d, y]] (kornia's LAF of point
    i, its centre in the last column, equal to point i's keypoint), stored unchanged and read
    back in the same order; a flat (N, 6) array in the same row-major order is accepted."""
    path = tmp_path / "features.h5"
    k, d = keynet_features(n=7)
    lafs = np.zeros((7, 2, 3))
    lafs[:, 0, 0] = np.arange(7) + 0.25            # a: a distinct value per point and entry
    lafs[:, 0, 1] = -np.arange(7) - 0.5            # b
    lafs[:, 1, 0] = np.arange(7) * 0.1             # c
    lafs[:, 1, 1] = np.arange(7) + 2.0             # d
    lafs[:, :, 2] = k[:, :2]                       # centre (x, y)
    with hloc_io.open_h5(path, "a") as fd:
        hloc_io.write_features(fd, "a.jpg", k, d, (640, 480), lafs=lafs)
        hloc_io.write_features(fd, "flat.jpg", k, d, (640, 480), lafs=lafs.reshape(7, 6))
        hloc_io.write_features(fd, "none.jpg", k, d, (640, 480))
    with h5py.File(path, "r") as fd:
        raw = fd["a.jpg"]["lafs"][()]
        assert raw.shape == (7, 2, 3) and raw.dtype == np.float32
        for i in range(7):  # entry by entry, against the values put in (no transpose, no reorder)
            assert raw[i, 0, 0] == np.float32(i + 0.25) and raw[i, 0, 1] == np.float32(-i - 0.5)
            assert raw[i, 1, 0] == np.float32(i * 0.1) and raw[i, 1, 1] == np.float32(i + 2.0)
            assert np.allclose(raw[i, :, 2], k[i, :2], atol=1e-4)  # the centre is the keypoint
        assert np.array_equal(fd["flat.jpg"]["lafs"][()], raw)
        assert "lafs" not in fd["none.jpg"]
    back = hloc_io.read_features(path, "a.jpg")
    assert back["lafs"].shape == (7, 2, 3) and np.allclose(back["lafs"], lafs, atol=1e-4)
    assert np.allclose(back["lafs"][:, :, 2], back["keypoints"], atol=1e-4)
    assert "lafs" not in hloc_io.read_features(path, "none.jpg")


def test_features_round_trip_and_hloc_layout(tmp_path):
    path = tmp_path / "features.h5"
    k, d = keynet_features()
    with hloc_io.open_h5(path, "a") as fd:
        hloc_io.write_features(fd, "sub/img 1.jpg", k, d, (640, 480))
    # what hloc reads: fd[name]['keypoints'] (N, 2), ['descriptors'] (D, N), ['scores'], ['image_size']
    with h5py.File(path, "r") as fd:
        g = fd["sub/img 1.jpg"]
        assert g["keypoints"].shape == (50, 2) and g["descriptors"].shape == (128, 50)
        assert g["scores"].shape == (50,) and list(g["image_size"][()]) == [640, 480]
        # hloc's convention is ours (top-left pixel centre at 0,0): stored unchanged
        assert np.allclose(g["keypoints"][()], k[:, :2], atol=1e-4)
        assert np.allclose(g["descriptors"][()].T, d)
        assert hloc_io.complete_names(fd) == ["sub/img 1.jpg"]
    back = hloc_io.read_features(path, "sub/img 1.jpg")
    assert np.allclose(back["keypoints"], k[:, :2], atol=1e-4)
    assert np.allclose(back["descriptors"], d)
    assert np.allclose(back["scores"], k[:, 3]) and np.allclose(back["scales"], k[:, 2])
    with pytest.raises(KeyError, match="no features for image"):
        hloc_io.read_features(path, "other.jpg")


def test_colmap_keypoints_are_shifted_by_half_a_pixel(tmp_path):
    path = tmp_path / "features.h5"
    k = np.array([[0.0, 0.0, 1, 1], [10.25, 3.5, 1, 1]])
    with hloc_io.open_h5(path) as fd:
        hloc_io.write_features(fd, "a.png", k, None, (20, 10))
    col = hloc_io.keypoints_for_colmap(path, "a.png")
    # centre of the top-left pixel: (0, 0) for us and hloc, (0.5, 0.5) for COLMAP
    assert col.dtype == np.float32 and np.allclose(col, [[0.5, 0.5], [10.75, 4.0]])
    assert np.allclose(hloc_io.from_colmap(col), k[:, :2])
    assert "descriptors" not in hloc_io.read_features(path, "a.png")


def test_matches_round_trip_both_orders(tmp_path):
    path = tmp_path / "matches.h5"
    m = np.array([[0, 5], [2, 1], [7, 3]])
    s = np.array([0.9, 0.8, 0.7], np.float32)
    with hloc_io.open_h5(path) as fd:
        hloc_io.write_matches(fd, "dir/a.jpg", "b.jpg", m, s, n0=10)
        assert hloc_io.has_matches(fd, "b.jpg", "dir/a.jpg")
        assert not hloc_io.has_matches(fd, "b.jpg", "c.jpg")
    with h5py.File(path, "r") as fd:
        key = "dir-a.jpg/b.jpg"  # hloc's names_to_pair
        assert hloc_io.names_to_pair("dir/a.jpg", "b.jpg") == key
        m0 = fd[key]["matches0"][()]
        assert m0.shape == (10,) and m0[0] == 5 and m0[2] == 1 and m0[7] == 3 and (m0 == -1).sum() == 7
        assert np.allclose(fd[key]["matching_scores0"][()][[0, 2, 7]], s)
    got, gs = hloc_io.read_matches(path, "dir/a.jpg", "b.jpg")
    assert np.array_equal(got, m) and np.allclose(gs, s)
    rev, _ = hloc_io.read_matches(path, "b.jpg", "dir/a.jpg")
    assert np.array_equal(rev, m[:, ::-1])
    with pytest.raises(KeyError, match="no matches"):
        hloc_io.read_matches(path, "a.jpg", "c.jpg")


def test_matches0_checks():
    with pytest.raises(ValueError, match="out of range"):
        hloc_io.matches_to_matches0(np.array([[3, 0]]), None, 3)
    with pytest.raises(ValueError, match="matched twice"):
        hloc_io.matches_to_matches0(np.array([[1, 0], [1, 2]]), None, 3)
    m0, s0 = hloc_io.matches_to_matches0(np.zeros((0, 2)), None, 4)
    assert list(m0) == [-1] * 4 and not s0.any()


def test_interrupted_group_is_not_complete_and_corrupt_file_is_set_aside(tmp_path):
    path = tmp_path / "features.h5"
    k, d = keynet_features(5)
    with hloc_io.open_h5(path) as fd:
        hloc_io.write_features(fd, "done.jpg", k, d, (640, 480))
        g = fd.create_group("half.jpg")  # what an interruption mid-write leaves
        g.create_dataset("keypoints", data=k[:, :2])
        assert hloc_io.complete_names(fd) == ["done.jpg"]
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file")
    with hloc_io.open_h5(bad) as fd:
        assert list(fd.keys()) == []
    assert (tmp_path / "broken.h5.corrupt").exists()
