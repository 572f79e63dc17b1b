"""HTTP routes, one module per protocol: shipml's own API, MLflow scoring, Open Inference v2, operations."""
