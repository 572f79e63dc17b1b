"""The `shipml` command: parse arguments, call one pipeline, print the result."""

from shipml.cli import data, deploy, experiments, models, monitor, serving, store  # registers the commands on the app
from shipml.cli.app import app, main

__all__ = ["app", "data", "deploy", "experiments", "main", "models", "monitor", "serving", "store"]
