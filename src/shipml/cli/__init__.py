"""The `shipml` command: parse arguments, call one pipeline, print the result."""

from shipml.core.quiet_imports import collector_paused as _collector_paused

with _collector_paused():  # the commands' imports (see collector_paused)
    from shipml.cli import data, deploy, experiments, models, monitor, serving, store  # registers the commands
    from shipml.cli.app import app, main

__all__ = ["app", "data", "deploy", "experiments", "main", "models", "monitor", "serving", "store"]
