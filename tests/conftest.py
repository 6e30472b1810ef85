"""Shared fixtures. Tests that need ../shared skip cleanly when it is absent.

Tests marked ``slow`` (end-to-end runs of minutes in all) are skipped by a plain ``pytest``
and run with ``--run-slow``, under ``CI=true`` (``.ci/run``) or when ``-m`` selects by marker."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # the scripts, and shared test helpers (synthetic_scene.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
SHARED = Path(os.environ.get("KEYNET_SHARED", ROOT.parent / "shared"))


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (CI=true runs them too)")


def _run_slow(config) -> bool:
    return bool(config.getoption("--run-slow") or _under_ci() or config.option.markexpr)


def pytest_collection_modifyitems(config, items):
    if _run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (CI=true runs it)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def _need(path: Path) -> Path:
    """``path`` if it exists; otherwise skip (a user without ../shared) or, under CI
    (``CI=true``), fail: CI must never pass by skipping what it is meant to check."""
    if not path.exists():
        msg = f"needs {path} (the ../shared folder beside the project)"
        if _under_ci():
            pytest.fail(f"CI=true but {msg} is missing", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder (skip if absent)."""
    return _need(SHARED)


@pytest.fixture(scope="session")
def hseq_mini(shared_dir) -> Path:
    """shared/data/hsequences-mini (HPatches layout, 4 sequences)."""
    return _need(shared_dir / "data" / "hsequences-mini")


@pytest.fixture
def tilted_pair(hseq_mini, tmp_path):
    """``(folder, affine (2, 3))``: ``folder/a.png`` (v_graffiti 1 at 400x320) and ``folder/b.png``
    (it seen under tilt 5 turned by 30 degrees, a synthesised view), the affine mapping a's
    pixels to b's."""
    import cv2
    import numpy as np

    from keynet.pipeline import views as V
    img = cv2.imread(str(hseq_mini / "v_graffiti" / "1.ppm"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, (400, 320), interpolation=cv2.INTER_AREA)
    tilted, a = V.synthesize(img, V.View(0, 0, 5.0, 30.0, 1.0))
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.png"), np.clip(np.rint(tilted), 0, 255).astype(np.uint8))
    return tmp_path, a


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    """shared/reference (published Key.Net weights and TF outputs)."""
    return _need(shared_dir / "reference")


@pytest.fixture(scope="session")
def imagenet_sample(shared_dir) -> Path:
    """shared/data/imagenet-sample (1000 JPEG photos)."""
    return _need(shared_dir / "data" / "imagenet-sample")


@pytest.fixture(scope="session")
def strecha(shared_dir) -> Path:
    """shared/data/strecha (fountain-P11, Herz-Jesus-P8 with ground-truth cameras)."""
    return _need(shared_dir / "data" / "strecha")
