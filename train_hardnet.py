#!/usr/bin/env python
"""Train the HardNet descriptor from a folder of photos (see docs/hardnet.md).

The original script name, kept: the same as ``keynet train-hardnet`` (see ``keynet/commands/train_hardnet.py``)."""
import sys

from keynet.commands.train_hardnet import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.train_hardnet import main

if __name__ == "__main__":
    sys.exit(main())
