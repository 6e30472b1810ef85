"""Shared argparse helpers for the scripts (booleans that really switch, optional ints)."""
from __future__ import annotations

import argparse


def str2bool(v: str) -> bool:
    """Parse 'true/false/1/0/yes/no' (the original ``type=bool`` turned 'False' into True)."""
    s = str(v).strip().lower()
    if s in ("1", "true", "t", "yes", "y", "on"):
        return True
    if s in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` switches; ``--name false`` is also accepted (original style)."""
    dest = name.lstrip("-").replace("-", "_")
    parser.add_argument(name, dest=dest, nargs="?", const=True, default=default, type=str2bool,
                        help=f"{help} (default: {default}; '--{name.lstrip('-')} false' or "
                             f"'--no-{name.lstrip('-')}' turns it off)")
    parser.add_argument("--no-" + name.lstrip("-"), dest=dest, action="store_false", help=argparse.SUPPRESS)
