"""Request records checked against a FeatureSchema: compiled once per schema, run per record.

Each problem names the record index, the feature and the rule, so an API can
answer 422 with exactly what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipml.core.schema import Feature, FeatureSchema

Policy = Literal["reject", "accept"]
Value = float | str | bool | None

_NUMBERS = frozenset({float, int})
_NUMBERS_OR_NONE = frozenset({float, int, type(None)})
_TEXT = frozenset({str})
_TEXT_OR_NONE = frozenset({str, type(None)})


@dataclass(frozen=True)
class FieldError:
    """One rule one record broke."""

    record: int
    feature: str
    rule: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "feature": self.feature, "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Accepted:
    """A record that passed, with values normalised (floats, strings, None) and what policy let through."""

    values: dict[str, Value]
    tolerated: tuple[tuple[str, str], ...] = ()  # (feature, rule) accepted by an `accept` policy


def _missing(value: object) -> bool:
    """None, or a float NaN: a missing value, as pandas and the pipeline read it (never "not finite")."""
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class RecordValidator:
    """Checks dict records against a schema: presence, type, finiteness, range, categories."""

    def __init__(
        self, schema: FeatureSchema, *, unknown_categories: Policy = "reject", out_of_range: Policy = "reject"
    ) -> None:
        self.schema = schema
        self.unknown_categories = unknown_categories
        self.out_of_range = out_of_range
        self._features = schema.features
        self._names = frozenset(schema.names)
        self._categories = {f.name: frozenset(f.categories) for f in schema.features if f.categories is not None}
        # The common case compiled once: (name, nullable?, numeric?, whole?, min, max, allowed categories)
        self._plan = [
            (
                f.name,
                f.nullable,
                f.kind in ("numeric", "integer"),
                f.kind == "integer",
                -math.inf if f.min is None else f.min,
                math.inf if f.max is None else f.max,
                self._categories.get(f.name),
            )
            for f in schema.features
            if f.kind != "boolean"
        ]
        self._fast = len(self._plan) == len(schema.features)

    def check(self, record: object, index: int) -> Accepted | list[FieldError]:
        """The record's normalised values, or every rule it breaks."""
        if self._fast and type(record) is dict:
            values = self._clean(record)
            if values is not None:
                return Accepted(values)
        return self._check(record, index)

    def all_clean(self, records: Sequence[object]) -> bool:
        """Whether every one of ``records`` is clean (see ``columns``): then each record is its own values."""
        return self.columns(records) is not None

    def columns(self, records: Sequence[object]) -> dict[str, np.ndarray] | None:  # noqa: C901 - a pass per rule
        """The per-column form of ``check``: when every one of ``records`` is a dict of exactly the schema's
        features that breaks no rule and needs no normalising, their values as ``Columns`` (float64 for numeric
        and integer features, NaN for missing; object arrays of strings, None for missing), checked a column at a
        time (numpy) rather than a record at a time; else None, which says nothing about which record is wrong:
        ``check`` each one then. Each record is then its own values (ints and NaN are read as the pipeline reads
        them), and the columns hold exactly the values a frame of those records would. For big batches, where
        the per-record check and a dict per row for the model were most of the request's time."""
        if not self._fast or not records:
            return None
        width = len(self._plan)
        for r in records:
            if type(r) is not dict or len(r) != width:
                return None
        out: dict[str, np.ndarray] = {}
        try:
            for name, nullable, numeric, whole, lo, hi, allowed in self._plan:
                column = list(map(itemgetter(name), records))  # type: ignore[arg-type]  # faster than a comprehension
                kinds = set(map(type, column))
                if numeric:
                    if not kinds <= (_NUMBERS_OR_NONE if nullable else _NUMBERS):
                        return None
                    x = np.array(column, dtype=np.float64)  # None -> NaN; an int past float's range raises
                    missing = np.isnan(x)
                    present = x[~missing] if missing.any() else x
                    if (missing.any() and not nullable) or not np.all((present >= lo) & (present <= hi)):
                        return None
                    if np.isinf(present).any() or (whole and not np.all(np.floor(present) == present)):
                        return None
                    out[name] = x
                else:
                    if not kinds <= (_TEXT_OR_NONE if nullable else _TEXT) or (
                        allowed is not None and not set(column).difference((None,)) <= allowed
                    ):
                        return None
                    text = np.empty(len(column), dtype=object)
                    text[:] = column
                    out[name] = text
        except (KeyError, OverflowError):  # a feature missing (and so another one extra), a huge int
            return None
        return out  # every feature present in records of exactly as many keys: no key is extra

    def _clean(self, record: dict[str, Any]) -> dict[str, Value] | None:  # noqa: C901 - the per-request fast path
        """The values of a record that breaks no rule at all, else None (then ``_check`` says what is wrong)."""
        if len(record) > len(self._plan) or not self._names.issuperset(record):
            return None
        values: dict[str, Value] = {}
        for name, nullable, numeric, whole, lo, hi, allowed in self._plan:
            v = record.get(name)
            if v is None or (type(v) is float and v != v):  # NaN is missing, as in a data frame
                if not nullable:
                    return None
                values[name] = None
                continue
            t = type(v)
            if numeric:
                if t is not float and t is not int:
                    return None
                try:
                    x = float(v)
                except OverflowError:  # an integer beyond float's range: _check says it is not finite
                    return None
                if not (lo <= x <= hi) or (whole and not x.is_integer()):
                    return None  # also catches NaN (all comparisons false) and +-inf outside the range
                if x in (math.inf, -math.inf):
                    return None
                values[name] = x
            else:
                if t is not str or (allowed is not None and v not in allowed):
                    return None
                values[name] = v
        return values

    def _check(self, record: object, index: int) -> Accepted | list[FieldError]:
        if not isinstance(record, Mapping):
            return [
                FieldError(
                    index, "*", "type", f"a record must be a JSON object of features, got {type(record).__name__}"
                )
            ]
        errors: list[FieldError] = []
        tolerated: list[tuple[str, str]] = []
        values: dict[str, Value] = {}
        extra = [k for k in record if k not in self._names]
        for key in extra[:5]:
            errors.append(FieldError(index, str(key), "unknown_feature", "the model has no such feature"))
        for f in self._features:
            if f.name not in record or _missing(record[f.name]):
                if f.nullable:
                    values[f.name] = None
                else:
                    rule = "missing" if f.name not in record else "not_nullable"
                    errors.append(FieldError(index, f.name, rule, "a value is required"))
                continue
            value = self._value(f, record[f.name], index, errors, tolerated)
            values[f.name] = value
        if errors:
            return errors
        return Accepted(values, tuple(tolerated))

    def _value(  # noqa: C901 - one rule after another per kind, in the order the messages name them
        self, f: Feature, raw: object, index: int, errors: list[FieldError], tolerated: list[tuple[str, str]]
    ) -> Value:
        if f.kind == "categorical":
            if isinstance(raw, bool | np.bool_) or not isinstance(raw, str | int | np.integer):
                errors.append(FieldError(index, f.name, "type", f"expected a string, got {_describe(raw)}"))
                return None
            text = str(raw)
            allowed = self._categories.get(f.name)
            if allowed is not None and text not in allowed:
                if self.unknown_categories == "reject":
                    errors.append(
                        FieldError(
                            index, f.name, "unknown_category", f"{_describe(text)} is not one of the trained categories"
                        )
                    )
                    return None
                tolerated.append((f.name, "unknown_category"))
            return text
        if f.kind == "boolean":
            if not isinstance(raw, bool | np.bool_):
                errors.append(FieldError(index, f.name, "type", f"expected true or false, got {_describe(raw)}"))
                return None
            return float(raw)
        if isinstance(raw, bool | np.bool_) or not isinstance(raw, int | float | np.integer | np.floating):
            errors.append(FieldError(index, f.name, "type", f"expected a number, got {_describe(raw)}"))
            return None
        try:
            number = float(raw)
        except OverflowError:
            number = math.inf if raw > 0 else -math.inf
        if not math.isfinite(number):
            errors.append(FieldError(index, f.name, "finite", f"expected a finite number, got {_describe(raw)}"))
            return None
        if f.kind == "integer" and not number.is_integer():
            errors.append(FieldError(index, f.name, "whole_number", f"expected a whole number, got {_describe(raw)}"))
            return None
        for rule, bad in (("min", f.min is not None and number < f.min), ("max", f.max is not None and number > f.max)):
            if bad:
                bound = f.min if rule == "min" else f.max
                if self.out_of_range == "reject":
                    op = ">=" if rule == "min" else "<="
                    errors.append(FieldError(index, f.name, rule, f"must be {op} {bound:g}, got {_describe(raw)}"))
                    return None
                tolerated.append((f.name, rule))
        return number


def frame_from_rows(schema: FeatureSchema, rows: Sequence[Mapping[str, Value]]) -> pd.DataFrame:
    """Accepted rows as the pipeline's input frame: float64 numerics, object strings, NaN for missing."""
    data: dict[str, Any] = {}
    for f in schema.features:
        column = [r[f.name] for r in rows]
        if f.is_numeric:
            data[f.name] = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
        else:
            data[f.name] = pd.Series([np.nan if v is None else v for v in column], dtype=object)
    return pd.DataFrame(data)
