"""Throughput of `extract_multiscale_features.py`: one process against several under torchrun.

Runs the extraction script on the same image list in each configuration (fresh output folder
each time, so nothing is skipped) and prints images per second:

* ``1 process, T threads``: one process, torch/OpenMP threads T (the default is every core);
* ``torchrun N x 1 thread``: ``torchrun --nproc-per-node N``, each process one thread, each
  taking every N-th image of the list (CPU here; one GPU per process where there are GPUs).

    python benchmarks/extract_scaling.py --data-dir ../shared/data/hsequences-mini \\
        ../shared/data/hsequences-extra --images-per-sequence 4 --procs 2
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "extract_multiscale_features.py"


def image_list(data_dirs, per_sequence: int, out: Path) -> int:
    lines = [str(p) for d in data_dirs for s in sorted(Path(d).resolve().iterdir()) if s.is_dir()
             for p in sorted(s.glob("*.ppm"))[:per_sequence]]
    if not lines:
        raise SystemExit(f"[ERROR] no .ppm images under {', '.join(map(str, data_dirs))}")
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def run(cmd, threads: int, cwd: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"[ERROR] {' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", nargs="+", required=True, help="HPatches-layout folder(s)")
    ap.add_argument("--images-per-sequence", type=int, default=4, help="first N images of each sequence")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="torchrun processes")
    ap.add_argument("--extra-args", nargs=argparse.REMAINDER, default=[],
                    help="passed to the extraction script (e.g. --upright false)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = image_list(args.data_dir, args.images_per_sequence, tmp / "list.txt")
        base = [str(SCRIPT), "--list-images", str(tmp / "list.txt"), "--progress", "false", *args.extra_args]
        rows = []
        cores = os.cpu_count() or 1
        for label, threads, launcher in ((f"1 process, {cores} threads", cores, [sys.executable]),
                                         ("1 process, 1 thread", 1, [sys.executable])):
            rows.append((label, run([*launcher, *base, "--results-dir", str(tmp / label.replace(' ', '_'))],
                                    threads, tmp)))
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        tr = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.procs),
              "--master-addr", "127.0.0.1", "--master-port", str(port)]
        rows.append((f"torchrun {args.procs} x 1 thread", run([*tr, *base, "--results-dir", str(tmp / "tr")], 1, tmp)))
    print(f"{n} images ({args.images_per_sequence} per sequence), {cores} CPU cores")
    print("| configuration | wall time (s) | images/s | speed-up |")
    print("|---|---|---|---|")
    for label, dt in rows:
        print(f"| {label} | {dt:.1f} | {n / dt:.2f} | {rows[0][1] / dt:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
