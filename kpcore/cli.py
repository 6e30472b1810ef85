"""Shared argparse helpers for the scripts: booleans that really switch, and options
generated from configuration dataclasses (every hyper-parameter declared once)."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, Optional, Tuple


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


# --------------------------------------------------------------------------- dataclass flags
def _tuple_of(kind):
    def parse(s: str):
        try:
            return tuple(kind(x) for x in str(s).split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {s!r}") from None
    parse.__name__ = f"{kind.__name__} list"
    return parse


def _optional(kind):
    def parse(s: str):
        return None if str(s).lower() in ("", "none") else kind(s)
    parse.__name__ = kind.__name__
    return parse


def _parser_for(hint) -> Tuple[Any, Dict[str, Any]]:
    """argparse ``type`` (and extra keywords) for a resolved type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return str2bool, {"nargs": "?", "const": True, "metavar": "BOOL"}
    if hint in (int, float, str):
        return hint, {}
    if origin in (tuple, Tuple) and args and args[0] in (int, float, str):
        return _tuple_of(args[0]), {"metavar": "A,B,..."}
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        kind, kw = _parser_for(inner)
        return _optional(kind), kw
    raise TypeError(f"no command-line parser for type {hint!r}")


def add_config_args(parser: argparse.ArgumentParser, config: Any, prefix: str = "",
                    group: Optional[Any] = None) -> None:
    """Add one option per field of the dataclass instance ``config`` (recursively for fields
    that are dataclasses, each in its own argument group), its current values as defaults.

    Field metadata: ``flags`` (option strings; default ``--field-name``), ``help``,
    ``choices``, ``nargs``, ``required``, ``cli=False`` (not an option), ``group`` (title of
    a nested dataclass's group). Destinations are dotted paths (``model.num_filters``);
    :func:`config_from_args` builds the configuration back.
    """
    hints = typing.get_type_hints(type(config))
    target = group if group is not None else parser
    for f in dataclasses.fields(config):
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        value = getattr(config, f.name)
        dest = prefix + f.name
        if dataclasses.is_dataclass(value):
            title = meta.get("group", f.name)
            doc = (type(value).__doc__ or "").strip().splitlines()
            add_config_args(parser, value, dest + ".", parser.add_argument_group(title, doc[0] if doc else None))
            continue
        kind, kw = _parser_for(hints[f.name])
        if "nargs" in meta:
            kw = {"nargs": meta["nargs"]}
            if "const" in meta:
                kw["const"] = meta["const"]
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if meta.get("required"):
            kw["required"] = True
        if "choices" not in kw:
            kw.setdefault("metavar", f.name.upper())
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
        text = meta.get("help", "") + ("" if meta.get("required") else f" (default: {shown})")
        target.add_argument(*meta.get("flags", ("--" + f.name.replace("_", "-"),)), dest=dest, type=kind,
                            default=value, help=text.strip(), **kw)


def config_from_args(config: Any, args: argparse.Namespace, prefix: str = "") -> Any:
    """A copy of the dataclass instance ``config`` with the values parsed by the options of
    :func:`add_config_args` (fields without an option keep their value)."""
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        dest = prefix + f.name
        if dataclasses.is_dataclass(value):
            changes[f.name] = config_from_args(value, args, dest + ".")
        elif hasattr(args, dest):
            changes[f.name] = getattr(args, dest)
    return dataclasses.replace(config, **changes)


def set_config_defaults(parser: argparse.ArgumentParser, values: Dict[str, Any], prefix: str) -> None:
    """Change the defaults of the options of ``prefix`` fields (a preset): ``values`` maps
    field names to values; explicit options still win."""
    parser.set_defaults(**{prefix + k: v for k, v in values.items()})
