#!/usr/bin/env python
"""Structure-from-Motion of an image folder with COLMAP (pycolmap): Key.Net + HardNet

The original script name, kept: the same as ``keynet reconstruct`` (see ``keynet/commands/reconstruct.py``)."""
import sys

from keynet.commands.reconstruct import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
