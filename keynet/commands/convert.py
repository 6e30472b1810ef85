"""Convert any supported Key.Net weights file (official TF .npz, the authors' PyTorch .pth,
the unofficial reproduction's .pt, or a project checkpoint) to the project format; with
--average, write the mean of several files' weights (e.g. the seeds of one recipe)."""
from __future__ import annotations

import sys

from keynet.base.cli import ArgumentParser, add_bool_flag
from keynet.weights import WeightsError, average_weights, convert, save_checkpoint


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("src", nargs="+", help="input weights file (several with --average)")
    p.add_argument("dst", help="output .pt file (project format)")
    add_bool_flag(p, "--average", False, "write the element-wise mean of the weights and BN statistics of all inputs")
    p.add_argument("--note", default="", help="free text stored in the metadata (default: empty)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.src) > 1 and not args.average:
        print("error: several input files: pass --average to average them, or convert one at a time",
              file=sys.stderr)
        return 2
    try:
        if args.average:
            model, meta = average_weights(args.src)
            if args.note:
                meta["note"] = args.note
            save_checkpoint(args.dst, model, meta)
            print(f"wrote {args.dst}: the mean of {len(args.src)} weights files")
            return 0
        meta = convert(args.src[0], args.dst, note=args.note)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} (from {meta.get('source_format', '?')} weights {args.src[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
