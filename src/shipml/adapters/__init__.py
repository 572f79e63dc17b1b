"""The outside world: files, the MLflow registry, (later) the prediction store and alert sinks."""
