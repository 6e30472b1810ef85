#!/usr/bin/env python
"""Convert any supported Key.Net weights file (official TF .npz, the authors' PyTorch .pth,

The original script name, kept: the same as ``keynet convert`` (see ``keynet/commands/convert.py``)."""
import sys

from keynet.commands.convert import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
