"""``python -m keynet``: the same program as the ``keynet`` command (:mod:`keynet.cli`)."""
import sys

from keynet.cli import main

if __name__ == "__main__":
    sys.exit(main())
