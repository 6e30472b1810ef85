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
