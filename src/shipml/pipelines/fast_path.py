"""Build a fast predictor for a fitted pipeline and decide, by comparison, whether it may serve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from shipml.core.fast.compile import compile_pipeline
from shipml.core.fast.model import FastPredictor, unpack
from shipml.core.fast.preprocess import Unsupported
from shipml.core.fast.trees import TreeKernel
from shipml.core.fast.verify import Reference, Verdict, edge_case_rows, split_points, verify
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
    pipeline: object, schema: FeatureSchema, rows: Sequence[Mapping[str, Value]], kernel: TreeKernel | None = None
) -> tuple[FastPredictor | None, Verdict]:
    """The fast predictor and its verdict on ``rows`` plus generated edge cases.

    What is compared is the predictor after a round trip through its packed form (what the registry
    stores and the server loads). The numpy predictor is always compared; with a ``kernel`` (the
    native one), the kernel-backed predictor is compared too, against the same reference answers, and
    the verdict lists every backend that agreed (the server uses only those). The kernel-backed one
    is returned if it agreed.
    """
    try:
        fast = unpack(compile_pipeline(pipeline, schema).pack())[0]
    except Unsupported as exc:
        return None, Verdict(False, "not verified", 0, float("nan"), f"unsupported: {exc}")
    probes = list(rows) + edge_case_rows(schema, rows, split_points(pipeline, fast))
    reference = Reference(pipeline, schema, probes)
    verdict = verify(fast, pipeline, schema, probes, reference)
    chosen = fast if verdict.verified else None
    if kernel is not None:
        backed = fast.with_kernel(kernel)
        if backed.backend != fast.backend:
            other = verify(backed, pipeline, schema, probes, reference)
            if other.verified and verdict.verified:
                mode = verdict.mode if verdict.mode == other.mode else "within 1e-12"
                worst = max(verdict.max_abs_diff, other.max_abs_diff)
                verdict = replace(verdict, mode=mode, max_abs_diff=worst, backends=verdict.backends + other.backends)
            elif other.verified:
                verdict = other
            if other.verified:
                chosen = backed
    return chosen, verdict
