"""The `shipml` command: parse arguments, call one pipeline, print the result."""

from shipml.cli import data, experiments, models, monitor, serving  # registers the commands on the app
from shipml.cli.app import app, main

__all__ = ["app", "data", "experiments", "main", "models", "monitor", "serving"]
