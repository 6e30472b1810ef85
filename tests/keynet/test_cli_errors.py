"""The commands' user errors and interruptions: an output folder that cannot be written is
one ``error:`` line and exit code 2 before any work; Ctrl-C is one ``interrupted:`` line and
exit code 130; misleading values name the option and its valid values; one error prefix."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keynet.base.cli import OutputPathError, check_output_dir, check_output_file, interruptible

ROOT = Path(__file__).resolve().parents[2]
TEST_IM = ROOT / "test_im" / "test_im.png"


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_check_output_dir_creates_nothing_and_names_the_culprit(tmp_path):
    check_output_dir(tmp_path / "a" / "b")  # a new folder below a writable one
    assert list(tmp_path.iterdir()) == []  # nothing made, the probe removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match=r"^--out .*file/sub: .*file is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    with pytest.raises(OutputPathError, match=r"^--results-dir .*file: is a file, not a folder"):
        check_output_dir(tmp_path / "file", "--results-dir")
    with pytest.raises(OutputPathError, match="is a folder, not a file"):
        check_output_file(tmp_path)
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_file(tmp_path / "file" / "pic.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_output_dir_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="cannot write in"):
            check_output_dir(ro / "out")
    finally:
        ro.chmod(0o755)


def _images(tmp_path: Path) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in ("a.png", "b.png"):
        (imgs / n).write_bytes(TEST_IM.read_bytes())
    return imgs


@pytest.mark.parametrize("command", ["match", "reconstruct", "demo", "bench", "extract"])
def test_an_output_folder_below_a_file_is_one_line_before_any_work(tmp_path, capsys, command):
    from keynet.commands import bench, extract, match, match_demo, reconstruct

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    below = str(blocker / "out")
    imgs = _images(tmp_path)
    # a weights file that does not exist: had the command started working, it would say so instead
    missing = str(tmp_path / "no_such_weights.pt")
    argv = {"match": (match.main, ["--image-dir", str(imgs), "--out", below, "--detector", missing]),
            "reconstruct": (reconstruct.main, ["--image-dir", str(imgs), "--out", below, "--detector", missing]),
            "demo": (match_demo.main, [str(imgs / "a.png"), str(imgs / "b.png"), "--out", below + "/m.png",
                                       "--detector", missing]),
            "bench": (bench.main, ["--data-dir", str(tmp_path / "no_data"), "--results-bench-dir", below]),
            "extract": (extract.main, ["--image-dir", str(imgs), "--results-dir", below, "--detector", missing])}
    main, args = argv[command]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "blocker is a file" in line and "weights" not in line and "no_data" not in line, line


def test_demo_names_an_unknown_picture_format_before_any_work(tmp_path, capsys):
    from keynet.commands import match_demo

    imgs = _images(tmp_path)
    assert match_demo.main([str(imgs / "a.png"), str(imgs / "b.png"), "--out", str(tmp_path / "m.xyz"),
                            "--detector", str(tmp_path / "no.pt")]) == 2
    assert "--out" in _one_error_line(capsys) and not (tmp_path / "m.xyz").exists()


def test_interruptible_is_one_line_and_exit_130(capsys):
    @interruptible("the files so far are kept")
    def main(argv=None) -> int:
        raise KeyboardInterrupt

    assert main([]) == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["interrupted: the files so far are kept; run the same command again to resume"]


def test_extract_and_match_are_interruptible():
    from keynet.commands import extract, match

    for main in (extract.main, match.main):
        assert hasattr(main, "__wrapped__"), main  # the interruptible wrapper


@pytest.mark.slow
def test_ctrl_c_in_extract_is_one_line_exit_130_and_resumable(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(40):
        (imgs / f"{i:02d}.png").write_bytes(TEST_IM.read_bytes())
    out = tmp_path / "feats"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "keynet", "extract", "--image-dir", str(imgs), "--results-dir",
                             str(out), "--descriptor", "none", "--no-progress", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            # a run started in the background inherits SIGINT ignored, and Python then
                            # installs no KeyboardInterrupt handler: give the child the default back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.rglob("*.kpt.npy")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning")]
    lines = [line for line in lines if "descriptors skipped" not in line]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "--results-dir" in lines[0], err
    assert 0 < len(list(out.rglob("*.kpt.npy"))) < 40  # what was done is kept, for the re-run to skip


@pytest.mark.parametrize("option", [["--max-image-size", "-1"], ["--max-image-size", "big"]])
def test_max_image_size_names_the_option(tmp_path, capsys, option):
    from keynet.commands import match

    with pytest.raises(SystemExit) as e:
        match.main(["--image-dir", str(tmp_path), "--out", str(tmp_path / "o")] + option)
    assert e.value.code == 2
    line = _one_error_line(capsys)
    assert "--max-image-size" in line and ">= 0" in line and "smaller than Key.Net" not in line


@pytest.mark.parametrize("option, values", [("affine", ("none", "learned", "moments", "keynet train-affnet")),
                                            ("orientation", ("learned", "gradient", "keynet train-orientation"))])
def test_affine_and_orientation_name_their_valid_values(tmp_path, option, values):
    from hardnet import HardNetWeightsError
    from keynet.pipeline.extraction import load_affine, load_orientation

    load = load_affine if option == "affine" else load_orientation
    text = tmp_path / "weights.txt"
    text.write_text("not weights\n")
    for spec, why in (("foo", "no such value or file"), (str(text), "not ")):
        with pytest.raises(HardNetWeightsError) as e:
            load(spec)
        msg = str(e.value)
        assert msg.startswith(f"--{option} {spec}: {why}") and all(v in msg for v in values), msg
        assert "\n" not in msg and "hardnet." not in msg and "training" not in msg, msg


def test_every_command_uses_one_error_prefix():
    """``error: `` (argparse's own) everywhere; no ``[ERROR]`` / ``Error:`` line in a command."""
    other = re.compile(r"""["'](\[ERROR\]|Error:|ERROR:)""")
    sources = [ROOT / "keynet" / "cli.py", *sorted((ROOT / "keynet" / "commands").glob("*.py")),
               ROOT / "HSequences_bench" / "hsequences.py"]
    found = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
             if other.search(line)]
    assert not found, found


@pytest.mark.slow
def test_python_m_keynet_is_the_keynet_command():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)

    for argv in (["--help"], ["--version"], ["nonsense"]):
        a, b = run("keynet", *argv), run("keynet.cli", *argv)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), argv
        assert a.stdout or a.stderr
    bad = run("keynet", "extract", "--num-points", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "--num-points" in bad.stderr
