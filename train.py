#!/usr/bin/env python
"""Train Key.Net on synthetic pairs with the M-SIP loss (see docs/training.md).

The original script name, kept: the same as ``keynet train`` (see ``keynet/commands/train.py``)."""
import sys

from keynet.commands.train import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
