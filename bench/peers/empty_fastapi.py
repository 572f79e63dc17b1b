"""The floor: a FastAPI + pydantic endpoint that validates the churn features and predicts nothing."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel


class Features(BaseModel):
    tenure: float
    monthly_charges: float
    total_charges: float | None = None
    age: float
    support_calls: float
    data_gb: float
    contract: str
    payment: str
    internet: str
    gender: str


class Request(BaseModel):
    features: Features


app = FastAPI()


@app.post("/predict")
async def predict(body: Request) -> dict[str, bool]:
    return {"ok": True}


@app.get("/health/ready")
async def ready() -> dict[str, bool]:
    return {"ok": True}
