#!/usr/bin/env python
"""HSequences (HPatches) benchmark: repeatability and matching metrics of the official

The original script name, kept: the same as ``keynet bench`` (see ``keynet/commands/bench.py``)."""
import sys

from keynet.commands.bench import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.bench import main

if __name__ == "__main__":
    sys.exit(main())
