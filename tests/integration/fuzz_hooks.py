"""Schemathesis hooks for tests/integration/test_openapi_fuzz.py (loaded by the `st` process through
SCHEMATHESIS_HOOKS): three in four drawn /feedback ids become ids of real predictions, so that feedback reaches
the store, not only the 404 of an unknown id."""

from __future__ import annotations

import os
from typing import Any

import schemathesis

PREDICTION_IDS = os.environ.get("SHIPML_FUZZ_PREDICTION_IDS", "").split()


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    if context.operation is None or context.operation.path != "/feedback" or not PREDICTION_IDS:
        return body
    drawn = body.get("prediction_id") if isinstance(body, dict) else None
    if isinstance(drawn, str) and len(drawn) % 4 != 0:
        return {**body, "prediction_id": PREDICTION_IDS[len(drawn) % len(PREDICTION_IDS)]}
    return body
