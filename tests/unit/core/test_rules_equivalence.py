"""The two forms of the schema's record rules agree: a record is accepted by the server's RecordValidator
exactly when its one-row frame passes the pandera schema that validates files.

Records carry every feature of the schema (a missing key is a missing column in a frame, which is a rule
about the file's shape, not about a record's values).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.core.records import Accepted, RecordValidator
from shipml.core.schema import Feature, FeatureSchema, Target
from shipml.core.validation import pandera_schema

BOUNDS = (-5.0, 0.0, 1.5, 100.0)
CATEGORIES = ("a", "b", "3", "True", "1.0", "")


@st.composite
def features(draw: st.DrawFn, name: str) -> Feature:
    kind = draw(st.sampled_from(["numeric", "integer", "categorical", "boolean"]))
    nullable = draw(st.booleans())
    if kind in ("numeric", "integer"):
        lo = draw(st.none() | st.sampled_from(BOUNDS))
        hi = draw(st.none() | st.sampled_from(BOUNDS))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        return Feature(name, kind, nullable, lo, hi)
    if kind == "categorical":
        cats = draw(st.none() | st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True).map(tuple))
        return Feature(name, kind, nullable, categories=cats)
    return Feature(name, kind, nullable)


schemas = st.integers(1, 4).flatmap(
    lambda n: st.tuples(*[features(f"f{i}") for i in range(n)]).map(
        lambda fs: FeatureSchema(tuple(fs), Target("y", "binary", ("0", "1")))
    )
)

# values around every edge the rules have
values = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from(
        [math.inf, -math.inf, 0, 0.0, -0.0, 1, 1.0, 1.5, -5, -5.5, 100, 100.0, 100.5, 3, 2**53 + 1, 10**400]
    ),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*CATEGORIES, "c", "5", "nan", "true", "1"]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def _frame_passes(schema: FeatureSchema, record: dict[str, Any]) -> bool:
    try:
        pandera_schema(schema).validate(pd.DataFrame([record]), lazy=True)
    except pa.errors.SchemaErrors:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), schema=schemas)
def test_record_validator_accepts_exactly_what_the_pandera_schema_accepts(
    data: st.DataObject, schema: FeatureSchema
) -> None:
    record = {f.name: data.draw(values, label=f.name) for f in schema.features}
    accepted = isinstance(RecordValidator(schema).check(record, 0), Accepted)
    assert accepted == _frame_passes(schema, record), (schema, record)


NUMBER = Feature("x", "integer", nullable=True, min=0.0, max=100.0)
FLAG = Feature("x", "boolean")
CODE = Feature("x", "categorical", categories=("a", "3"))


@pytest.mark.parametrize(
    ("feature", "value", "accepted"),
    [
        (NUMBER, None, True),
        (NUMBER, math.nan, True),  # missing, as in a file (was: refused by the server as not finite)
        (NUMBER, 100, True),
        (NUMBER, 100.5, False),
        (NUMBER, 2.5, False),
        (NUMBER, math.inf, False),
        (NUMBER, 10**40 * 10**360, False),  # beyond a float: not finite (was: OverflowError in the server)
        (NUMBER, "5", False),  # a string is no number (was: coerced by the file's schema)
        (NUMBER, True, False),  # nor is a boolean (was: coerced to 1.0)
        (FLAG, True, True),
        (FLAG, 1, False),  # a number is no boolean (was: coerced to True)
        (FLAG, "false", False),  # nor is a string (was: coerced to True!)
        (FLAG, None, False),
        (CODE, "a", True),
        (CODE, 3, True),  # a code written as a number, as a CSV reads it
        (CODE, "b", False),
        (CODE, math.inf, False),  # (was: accepted by the file's schema when "inf" was allowed)
        (CODE, True, False),
    ],
    ids=lambda v: v.kind if isinstance(v, Feature) else repr(v)[:12],
)
def test_edges(feature: Feature, value: object, accepted: bool) -> None:
    schema = FeatureSchema((feature,), Target("y", "binary", ("0", "1")))
    assert isinstance(RecordValidator(schema).check({"x": value}, 0), Accepted) is accepted
    assert _frame_passes(schema, {"x": value}) is accepted
