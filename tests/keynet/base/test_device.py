"""The one device rule (keynet.base.device) and the launcher's environment."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from keynet.base.device import DeviceError, LaunchEnv, resolve_device
from keynet.base.runner import Shard

ROOT = Path(__file__).resolve().parents[3]


def test_auto_and_explicit_devices():
    assert resolve_device(None).type == resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("meta").type == "meta"


def test_unknown_device_is_one_clear_error():
    with pytest.raises(DeviceError, match="unknown device 'foo'.*available: cpu"):
        resolve_device("foo")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_one_clear_error():
    with pytest.raises(DeviceError, match="'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_extract_with_a_missing_device_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "extract_multiscale_features.py"), "--results-dir", str(tmp_path),
                        "--device", "cuda", "--progress", "false"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cuda" in lines[0] and "not available" in lines[0]
    assert not any(tmp_path.rglob("*.npy"))


def test_launch_env_and_shard_read_the_same_variables(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env, shard = LaunchEnv.from_env(), Shard.from_env()
    assert (env.rank, env.world, env.local_rank, env.enabled, env.main) == (2, 3, 1, True, False)
    assert (shard.rank, shard.world, shard.local_rank) == (2, 3, 1)
    assert shard.take(list("abcdefg")) == ["c", "f"]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert LaunchEnv.from_env() == LaunchEnv(0, 1, 0)
