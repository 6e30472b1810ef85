#!/usr/bin/env python
"""Extract multi-scale Key.Net keypoints and HardNet descriptors for a list of images.

The original script name, kept: the same as ``keynet extract`` (see ``keynet/commands/extract.py``)."""
import sys

from keynet.commands.extract import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.extract import main

if __name__ == "__main__":
    sys.exit(main())
