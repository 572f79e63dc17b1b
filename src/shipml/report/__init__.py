"""The monitoring report as one self-contained HTML page (`shipml monitor report`): a stored ``DriftReport`` and,
when the config runs one, its experiment over the same window.

``page`` builds the page and writes it; ``drift_section`` draws a segment's drift and performance,
``experiment_section`` the experiment; ``markup`` and ``svg`` are their shared text and chart pieces. Rendering
only: the values are core's (``DriftReport``, ``ExperimentHistory``, made by the jobs of ``pipelines``); nothing here
reads the store or the registry.
"""

from shipml.report.page import render_report, write_report

__all__ = ["render_report", "write_report"]
