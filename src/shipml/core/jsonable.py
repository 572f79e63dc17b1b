"""Typed values as JSON-ready data and back: one rule for every report (NaN and infinities as None, tuples as
lists), and one decoder that rebuilds a dataclass from that data by its type hints."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


def jsonable(value: Any) -> Any:
    """``value`` for ``json.dumps``: objects with a ``to_dict`` through it, dataclasses field by field, floats
    that are not finite as None (JSON has no NaN or infinity), tuples as lists; anything else as it is."""
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def from_jsonable(cls: type[T], data: Mapping[str, Any]) -> T:
    """The dataclass ``cls`` back from ``jsonable``'s output, field by field as its type hints say: nested
    dataclasses and tuples rebuilt, None in a plain ``float`` field as NaN (what ``jsonable`` wrote for it).
    Keys that are not fields (a comparison's verdicts) are ignored; a missing field takes its default."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: _decoded(hints[name], data[name]) for name in names if name in data})


def _decoded(hint: Any, value: Any) -> Any:
    if value is None:
        return math.nan if hint is float else None  # a plain float field held NaN
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _decoded(next(a for a in typing.get_args(hint) if a is not type(None)), value)
    if origin is tuple:
        return tuple(_decoded(typing.get_args(hint)[0], v) for v in value)
    if isinstance(hint, type) and is_dataclass(hint):
        return from_jsonable(hint, value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    return float(value) if hint is float else value
