"""The ``slow`` marker (tests/conftest.py, pyproject.toml): a plain ``pytest`` skips the slow
tests, ``--run-slow``, ``CI=true`` (what ``.ci/run`` sets) and a ``-m`` selection run them,
and the marker is registered (``--strict-markers`` accepts it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args, ci=None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers",
                          "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path), *args],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    return out.stdout.strip().splitlines()[-1]


def test_slow_tests_skip_by_default_and_run_on_request(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text("import pytest\n\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\n\n"
                                        "def test_fast():\n    pass\n")
    assert re.match(r"1 passed, 1 skipped", _run(tmp_path, ci="false"))
    assert re.match(r"2 passed", _run(tmp_path, "--run-slow", ci="false"))
    assert re.match(r"2 passed", _run(tmp_path, ci="true"))
    assert re.match(r"1 passed, 1 deselected", _run(tmp_path, "-m", "slow", ci="false"))


def test_ci_runs_the_readme_command_with_ci_true():
    """.ci/run sets CI=true and runs the README's test command, so the slow tests run there."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^export CI="\$\{CI:-true\}"', ci, re.M)
    assert re.search(r"^python -m pytest -q tests$", ci, re.M)
