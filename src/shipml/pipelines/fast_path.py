"""Build a fast predictor for a fitted pipeline and decide, by comparison, whether it may serve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from shipml.core.fast import FastPredictor, Unsupported, Verdict, compile_pipeline, edge_case_rows, verify
from shipml.core.fast.verify import split_points
from shipml.core.records import Value
from shipml.core.schema import FeatureSchema


def rows_from_frame(frame: pd.DataFrame, schema: FeatureSchema) -> list[dict[str, Value]]:
    """Records as the server sees them: floats, strings, None for missing."""
    out = []
    for record in frame[schema.names].to_dict(orient="records"):
        row: dict[str, Value] = {}
        for k, v in record.items():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                row[str(k)] = None
            else:
                row[str(k)] = v.item() if hasattr(v, "item") else v
        out.append(row)
    return out


def build_and_verify(
    pipeline: object, schema: FeatureSchema, rows: Sequence[Mapping[str, Value]]
) -> tuple[FastPredictor | None, Verdict]:
    """The fast predictor and its verdict on ``rows`` plus generated edge cases."""
    try:
        fast = compile_pipeline(pipeline, schema)
    except Unsupported as exc:
        return None, Verdict(False, "not verified", 0, float("nan"), f"unsupported: {exc}")
    probes = list(rows) + edge_case_rows(schema, rows, split_points(pipeline, fast))
    verdict = verify(fast, pipeline, schema, probes)
    return (fast if verdict.verified else None), verdict
