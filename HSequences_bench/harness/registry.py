"""The method registry of every benchmark: name -> factory, built by name with one error for an unknown name.

Each benchmark keeps one :class:`Registry` of its methods (the rotation benchmark's in
:mod:`.rotation_methods`, the wide-baseline benchmark's in :mod:`.wide_baseline_methods`); a
new method is one entry::

    METHODS["keynet-moments"] = keynet_preset(orientation="learned", affine="moments")

What a factory is given is the benchmark's own (the wide-baseline ``MethodOptions``, the
rotation benchmark's shared detections and weights); the registry only names them.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterable, Optional, Tuple, TypeVar

from .method_base import MethodError

F = TypeVar("F", bound=Callable)


class Registry(Dict[str, F], Generic[F]):
    """An ordered ``name -> factory`` mapping (a ``dict``: ``METHODS[name] = factory`` adds
    one). ``hint``: what else the benchmark accepts as a name, added to the unknown-name error."""

    def __init__(self, entries: Optional[Dict[str, F]] = None, hint: str = "") -> None:
        super().__init__(entries or {})
        self.hint = hint

    @property
    def names(self) -> Tuple[str, ...]:
        """The registered names, in order."""
        return tuple(self)

    def unknown(self, name: str) -> MethodError:
        """The error of an unknown method ``name``, listing the registered names."""
        return MethodError(f"unknown method {name!r}; choose from {', '.join(self)}{self.hint}")

    def check(self, names: Iterable[str]) -> None:
        """Raise :meth:`unknown` for the first of ``names`` that is not registered."""
        for n in names:
            if n not in self:
                raise self.unknown(n)

    def factory(self, name: str) -> F:
        """The factory of ``name`` (raises :meth:`unknown`)."""
        if name not in self:
            raise self.unknown(name)
        return self[name]

    def build(self, name: str, *args, **kwargs):
        """The method ``name`` made by its factory with ``args`` / ``kwargs``."""
        return self.factory(name)(*args, **kwargs)

