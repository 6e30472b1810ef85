#!/usr/bin/env python
"""Train the keypoint orientation network (OriNet) from a folder of photos (see docs/rotation.md).

The same as ``keynet train-orientation`` (see ``keynet/commands/train_orientation.py``)."""
import sys

from keynet.commands.train_orientation import main

if __name__ == "__main__":
    sys.exit(main())
