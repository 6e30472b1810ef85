#!/usr/bin/env python
"""Extract classical baselines (OpenCV SIFT, ORB, FAST/Harris/Shi-Tomasi + SIFT) into the

The original script name, kept: the same as ``keynet baselines`` (see ``keynet/commands/baselines.py``)."""
import sys

from keynet.commands.baselines import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.baselines import main

if __name__ == "__main__":
    sys.exit(main())
