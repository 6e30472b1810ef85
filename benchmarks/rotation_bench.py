#!/usr/bin/env python
"""Rotation benchmark (HSequences pairs and single images rotated by a list of angles; see
docs/rotation.md): the same as ``keynet bench-rotation`` (``keynet/commands/bench_rotation.py``).

Example:
  python benchmarks/rotation_bench.py --data-dir ../shared/data/hsequences-mini --max-pairs 1 \\
      --angles 0 90 --methods upright gradient sift orb --out-dir /tmp/rotbench
"""
import sys

from keynet.commands.bench_rotation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
