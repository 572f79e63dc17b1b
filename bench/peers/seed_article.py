"""The seed article's serving pattern, for comparison: a module-global model cache, a DataFrame per
request, predict() and predict_proba() as two model calls, all inside an async handler."""

from __future__ import annotations

import os
import time

import mlflow.sklearn
import pandas as pd
from fastapi import FastAPI

app = FastAPI()
model_cache: dict[str, object] = {}


def get_model() -> object:
    if "model" not in model_cache:
        model_cache["model"] = mlflow.sklearn.load_model(os.environ["SEED_MODEL_PATH"])
    return model_cache["model"]


@app.post("/predict")
async def predict(body: dict) -> dict:  # type: ignore[type-arg]
    model = get_model()
    df = pd.DataFrame([body["features"]])
    prediction = model.predict(df)[0]  # type: ignore[attr-defined]
    proba = model.predict_proba(df)[0]  # type: ignore[attr-defined]
    return {
        "prediction_id": f"pred_{int(time.time() * 1000)}",
        "predicted_class": int(prediction),
        "probabilities": {str(i): float(p) for i, p in enumerate(proba)},
    }


@app.get("/health/ready")
async def ready() -> dict[str, bool]:
    get_model()
    return {"ok": True}
