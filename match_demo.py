#!/usr/bin/env python
"""Match two images and draw the matches: Key.Net + HardNet features, a kornia matcher,

The original script name, kept: the same as ``keynet match-demo`` (see ``keynet/commands/match_demo.py``)."""
import sys

from keynet.commands.match_demo import *  # noqa: F401,F403  (the command's functions, for old imports)
from keynet.commands.match_demo import main

if __name__ == "__main__":
    sys.exit(main())
