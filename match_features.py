#!/usr/bin/env python
"""Match the images of a folder: Key.Net + HardNet features, image pairs (exhaustive,

The original script name, kept: the same as ``keynet match`` (see ``keynet/commands/match.py``)."""
import sys

from keynet.commands.match import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.match import main

if __name__ == "__main__":
    sys.exit(main())
