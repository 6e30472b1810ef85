"""Shared argparse helpers for the scripts: one way to write booleans, ``--device`` and
help with defaults, and options generated from configuration dataclasses (every
hyper-parameter declared once). The conventions are written down in docs/cli.md."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

#: Help of every ``--device`` option (inference and training alike).
DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."

_SHOWS_DEFAULT = re.compile(r"%\(default\)|\(default\b|\bdefault:|\(required\)", re.IGNORECASE)


#: Exit code of a command stopped by Ctrl-C (the shell's 128 + SIGINT).
INTERRUPTED = 130


def interruptible(kept: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator of a command's ``main``: Ctrl-C ends it with one line on stderr,
    ``interrupted: <kept>; run the same command again to resume``, and exit code 130
    instead of a ``KeyboardInterrupt`` traceback. ``kept``: what the interrupted run leaves."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"\ninterrupted: {kept}; run the same command again to resume", file=sys.stderr, flush=True)
                return INTERRUPTED
        return run
    return wrap


class OutputPathError(ValueError):
    """An output folder or file that cannot be created or written (the message names it)."""


def check_output_dir(path: Union[str, os.PathLike], option: str = "--out") -> None:
    """Raise :class:`OutputPathError` naming ``option`` when the folder ``path`` cannot be
    created or written: it is a file, a file lies on its way, or the nearest existing folder
    above it refuses a new file. Creates nothing (a probe file is removed at once)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{option} {path}: is a file, not a folder")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{option} {path}: {existing} is a file, it cannot hold a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".keynet-probe-"):
            pass
    except OSError as e:
        raise OutputPathError(f"{option} {path}: cannot write in {existing} ({e.strerror or e})") from None


def check_output_file(path: Union[str, os.PathLike], option: str = "--out") -> None:
    """Raise :class:`OutputPathError` naming ``option`` when the file ``path`` cannot be
    written: it is a folder, or its folder cannot be created or written (:func:`check_output_dir`)."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{option} {path}: is a folder, not a file")
    check_output_dir(p.parent if str(p.parent) else ".", option)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The formatter of every command: the description keeps its layout and each option's
    help ends with its default, unless the help already says it (``(default: ...)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _SHOWS_DEFAULT.search(text):
            return text
        if getattr(action, "required", False) and action.option_strings:
            return text + " (required)"
        if action.default is None and action.option_strings:
            return text + " (default: none)"
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the project's conventions: :class:`HelpFormatter` by
    default, and boolean options (:func:`add_bool_flag`) that never swallow a positional
    argument: the next word is the flag's value only when it is a boolean word, so
    ``--average a.pt b.pt out.pt`` is ``--average true`` and three positionals, while
    ``--average false a.pt ...`` still reads ``false``. A bad option or value is one
    ``error:`` line and exit code 2, not the usage text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """A bad option or value: one line naming it (and where the options are), exit 2."""
        self.exit(2, f"error: {message} ({self.prog} -h lists the options)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._explicit_bools(args), namespace)

    def _explicit_bools(self, args: List[str]) -> List[str]:
        """``--flag WORD`` -> ``--flag=WORD`` when WORD is a boolean word, a bare ``--flag``
        -> ``--flag=true``, for the boolean options of this parser; nothing changes for a
        parser without positional arguments (``--flag maybe`` then says it expects a boolean)."""
        if all(a.option_strings for a in self._actions):
            return args
        flags = {s for a in self._actions if a.type in (str2bool, auto_bool) and a.nargs == "?"
                 for s in a.option_strings}
        out: List[str] = []
        i = 0
        while i < len(args):
            word = str(args[i])
            if word == "--":
                out += args[i:]
                break
            if word in flags:
                nxt = str(args[i + 1]) if i + 1 < len(args) else None
                if nxt is not None and nxt.strip().lower() in _BOOL_WORDS + ("auto",):
                    out.append(f"{word}={nxt}")
                    i += 2
                    continue
                out.append(f"{word}=true")
            else:
                out.append(args[i])
            i += 1
        return out


_TRUE_WORDS = ("1", "true", "t", "yes", "y", "on")
_FALSE_WORDS = ("0", "false", "f", "no", "n", "off")
_BOOL_WORDS = _TRUE_WORDS + _FALSE_WORDS


def str2bool(v: str) -> bool:
    """Parse 'true/false/1/0/yes/no' (the original ``type=bool`` turned 'False' into True)."""
    s = str(v).strip().lower()
    if s in _TRUE_WORDS:
        return True
    if s in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _add_bool(target: Any, flags: Sequence[str], dest: str, default: Optional[bool], help: str,
              auto: bool = False) -> None:
    """The one boolean convention: ``--flag`` (true), ``--flag true|false`` and ``--no-flag``
    (false), for every long option string of ``flags`` (the first is the canonical name);
    ``auto``: also ``--flag auto`` (``None``: the configuration decides)."""
    longs = [f for f in flags if f.startswith("--")]
    first = longs[0].lstrip("-")
    switch = f"--no-{first} = false" if default or default is None else f"--{first} = true"
    shown = "auto" if default is None else _bool_text(default)
    text = f"{help} (default: {shown}; {switch})".replace("%", "%%").strip()
    target.add_argument(*flags, dest=dest, nargs="?", const=True, default=default,
                        type=auto_bool if auto else str2bool, metavar="auto|true|false" if auto else "BOOL",
                        help=text)
    target.add_argument(*("--no-" + f[2:] for f in longs), dest=dest, action="store_false", default=default,
                        help=argparse.SUPPRESS)


def add_bool_flag(parser: Any, name: str, default: bool, help: str, *aliases: str) -> None:
    """A boolean option: ``--name`` / ``--name true|false`` / ``--no-name`` (``aliases``: other
    option strings of the same switch, each with its ``--no-`` form). ``parser``: an
    ``ArgumentParser`` or an argument group."""
    _add_bool(parser, (name, *aliases), name.lstrip("-").replace("-", "_"), default, help)


def add_auto_flag(parser: Any, name: str, help: str) -> None:
    """A three-valued switch ``--name auto|true|false`` (default ``auto``: the command decides
    from its other options); read its value with :func:`auto_flag`."""
    parser.add_argument(name, choices=("auto", "true", "false"), default="auto", help=help)


def auto_flag(value: str, auto: Optional[bool] = None) -> Optional[bool]:
    """The value of an :func:`add_auto_flag` switch: ``true``/``false`` -> bool, ``auto`` ->
    ``auto`` (``None`` unless the caller gives the automatic choice)."""
    return auto if value == "auto" else value == "true"


def add_device_arg(parser: Any, default: str = "auto", help: str = DEVICE_HELP) -> None:
    """``--device``: ``auto`` (parsed as ``None``: CUDA when available, else CPU) or a torch
    device name."""
    parser.add_argument("--device", type=device_arg, default=default, help=help)


def device_arg(v: str) -> Optional[str]:
    """``--device`` value: ``auto`` (or empty) -> ``None``, the loaders' automatic choice (as
    ``--device auto`` of the training commands); anything else is passed to torch as written."""
    s = str(v).strip()
    return None if s.lower() in ("", "auto") else s


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


def auto_bool(v: str) -> Optional[bool]:
    """A three-valued switch's value: ``auto`` (or ``none``) -> ``None`` (the configuration
    decides from its other settings), else a boolean word."""
    if str(v).strip().lower() in ("auto", "none", ""):
        return None
    return str2bool(v)


auto_bool.__name__ = "auto|true|false"


def _at_least_one(v: str, not_int: str, too_small: str) -> int:
    """``int(v)`` if it is >= 1; else an ``ArgumentTypeError`` with the message for each case."""
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(not_int) from None
    if n < 1:
        raise argparse.ArgumentTypeError(too_small)
    return n


def positive_int(v: str) -> int:
    """An integer >= 1 (``--num-points``: 0 never means "all"; say ``all`` where all is meant)."""
    message = f"expected a positive integer, got {v!r}"
    return _at_least_one(v, message, message)


def non_negative_int(v: str) -> int:
    """An integer >= 0 (``--max-image-size``: 0 = never downscale)."""
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = full resolution), got {v!r}")
    return n


def count_or_all(what: str, every: str):
    """An argparse type: a number of ``what`` >= 1, or ``all`` (also ``none``) -> ``None``
    (``every`` says what all means); 0 is rejected, as by :func:`positive_int`."""
    def parse(v: str) -> Optional[int]:
        if str(v).strip().lower() in ("all", "none"):
            return None
        return _at_least_one(v, f"expected a number of {what} or 'all', got {v!r}",
                             f"expected a number of {what} >= 1 or 'all' ({every}), got {v!r}")
    parse.__name__ = f"{what} count"
    return parse


def _parser_for(hint) -> Tuple[Any, Dict[str, Any]]:
    """argparse ``type`` (and extra keywords) for a resolved type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and set(args) == {bool, type(None)}:
        return auto_bool, {"metavar": "auto|true|false"}
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
                    group: Optional[Any] = None, only: Optional[Sequence[str]] = None) -> None:
    """Add one option per field of the dataclass instance ``config`` (recursively for fields
    that are dataclasses, each in its own argument group), its current values as defaults.

    Field metadata: ``flags`` (option strings, the first the canonical name; default
    ``--field-name``), ``help``, ``choices``, ``nargs``, ``required``, ``cli=False`` (not an
    option), ``group`` (title of a nested dataclass's group), ``type`` (the argparse type,
    instead of the one of the field's annotation), ``metavar``. Destinations are dotted paths
    (``model.num_filters``); :func:`config_from_args` builds the configuration back. Boolean
    fields follow :func:`add_bool_flag` (``--flag``, ``--flag true|false``, ``--no-flag``);
    ``Optional[bool]`` fields are three-valued (``auto|true|false``, ``auto`` = ``None``).
    ``only``: the names of the fields that get an option (in this order; default: all).
    """
    hints = typing.get_type_hints(type(config))
    target = group if group is not None else parser
    fields = {f.name: f for f in dataclasses.fields(config)}
    if only is not None:
        unknown = [n for n in only if n not in fields]
        if unknown:
            raise TypeError(f"{type(config).__name__} has no field {', '.join(unknown)}")
    for f in (fields[n] for n in only) if only is not None else fields.values():
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
        flags = meta.get("flags", ("--" + f.name.replace("_", "-"),))
        hint = hints[f.name]
        tri = typing.get_origin(hint) is typing.Union and set(typing.get_args(hint)) == {bool, type(None)}
        if (hints[f.name] is bool or tri) and "nargs" not in meta and "choices" not in meta:
            _add_bool(target, flags, dest, value, meta.get("help", ""), auto=tri)
            continue
        kind, kw = _parser_for(hints[f.name])
        if "type" in meta:
            kind = meta["type"]
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        if "nargs" in meta:
            kw = {"nargs": meta["nargs"]}
            if "const" in meta:
                kw["const"] = meta["const"]
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if meta.get("required"):
            kw["required"] = True
        if "choices" not in kw:  # named after the canonical option, as argparse does
            kw.setdefault("metavar", flags[0].lstrip("-").replace("-", "_").upper())
        none = "auto" if kind in (auto_bool, device_arg) else "none"
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else none if value is None else value
        if isinstance(shown, bool):
            shown = _bool_text(shown)
        text = meta.get("help", "") + (" (required)" if meta.get("required") else f" (default: {shown})")
        default = "auto" if kind is device_arg and value is None else value  # argparse converts it to None
        target.add_argument(*flags, dest=dest, type=kind, default=default, help=text.replace("%", "%%").strip(), **kw)


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
