"""BentoML with adaptive batching, serving the same pipeline (run in the bench environment)."""

from __future__ import annotations

import os

import bentoml
import joblib
import pandas as pd

WORKERS = int(os.environ.get("PEER_WORKERS", "1"))


@bentoml.service(workers=WORKERS)
class Churn:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["PEER_MODEL_PICKLE"])

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)  # 20 ms sheds most requests with 503
    def predict(self, features: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        frame = pd.DataFrame(features).astype(
            {"contract": object, "payment": object, "internet": object, "gender": object}
        )
        proba = self.model.predict_proba(frame)
        return [{"probabilities": {str(i): float(p) for i, p in enumerate(row)}} for row in proba]
