"""Typed values as JSON-ready data: one rule for every report (NaN and infinities as None, tuples as lists)."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any


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
