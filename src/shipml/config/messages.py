"""Configuration problems as people read them: one line per problem, ``key.path: what is wrong, got what``, with
a suggestion for a misspelt key; and URIs with their credentials masked wherever they are shown."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from shipml.config.settings import Settings

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``key.path: what is wrong, got what``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        got = err.get("input")
        ctx = err.get("ctx") or {}
        if kind in _BOUNDS:
            op, key = _BOUNDS[kind]
            text = f"must be {op} {ctx[key]}, got {got}"
        elif kind == "extra_forbidden":
            text = "unknown key" + _suggestion(err["loc"])
        elif kind == "missing":
            text = "required value missing"
        else:
            msg = str(err["msg"]).replace("Value error, ", "")
            msg = msg.replace("Input should be", "must be").replace("String should", "must")
            text = msg if kind == "value_error" else f"{msg}, got {got!r}"
        lines.append(f"{loc}: {text}")
    return lines


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """`, did you mean 'cv_folds'?` for a misspelt key, when one is close."""
    model: Any = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        model = _model_of(field.annotation)
        if model is None:
            return ""
    names = list(model.model_fields) if hasattr(model, "model_fields") else []
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


# userinfo runs to the last "@" before the path: an unescaped "@" in a password stays inside it
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def redact_uri(text: str) -> str:
    """``text`` with the credentials of every URI in it masked: ``scheme://user:***@host``.

    A user name alone (``https://token@host``) is often the secret itself, so it is masked whole.
    """

    def mask(m: re.Match[str]) -> str:
        user, colon, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:***@" if colon else f"{m.group('scheme')}***@"

    return _USERINFO.sub(mask, text)
