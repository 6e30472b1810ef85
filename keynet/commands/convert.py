"""Convert any supported Key.Net weights file (official TF .npz, the authors' PyTorch .pth,
the unofficial reproduction's .pt, or a project checkpoint) to the project format."""
from __future__ import annotations

import argparse
import sys
from ..weights import WeightsError, convert


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("src", help="input weights file")
    p.add_argument("dst", help="output .pt file (project format)")
    p.add_argument("--note", default="", help="free text stored in the metadata")
    args = p.parse_args(argv)
    try:
        meta = convert(args.src, args.dst, note=args.note)
    except WeightsError as e:
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} (from {meta.get('source_format', '?')} weights {args.src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
