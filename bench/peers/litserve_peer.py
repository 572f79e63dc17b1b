"""LitServe with dynamic batching, serving the same pipeline (run in the bench environment)."""

from __future__ import annotations

import os
import sys

import joblib
import litserve as ls
import pandas as pd


class ChurnAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = joblib.load(os.environ["PEER_MODEL_PICKLE"])

    def decode_request(self, request: dict) -> dict:  # type: ignore[type-arg]
        return request["features"]  # type: ignore[no-any-return]

    def batch(self, inputs: list[dict]) -> pd.DataFrame:  # type: ignore[type-arg]
        return pd.DataFrame(inputs).astype(
            {"contract": object, "payment": object, "internet": object, "gender": object}
        )

    def predict(self, x: pd.DataFrame | dict) -> list[list[float]] | list[float]:  # type: ignore[type-arg]
        if isinstance(x, dict):  # no batching: one decoded request
            return self.model.predict_proba(self.batch([x])).tolist()[0]  # type: ignore[no-any-return]
        return self.model.predict_proba(x).tolist()  # type: ignore[no-any-return]

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict:  # type: ignore[type-arg]
        return {"probabilities": {str(i): p for i, p in enumerate(output)}}


if __name__ == "__main__":
    port, workers, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    api = ChurnAPI(max_batch_size=batch, batch_timeout=0.005 if batch > 1 else 0.0)
    ls.LitServer(api, accelerator="cpu", workers_per_device=workers).run(port=port, host="127.0.0.1")
