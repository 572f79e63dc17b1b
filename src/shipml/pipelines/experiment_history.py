"""An experiment's report at cumulative cuts of a window: how its intervals narrowed while the data came in.

Each point is ``ExperimentJob.report`` over [since, cut), computed now: the predictions logged before the cut, with
the feedback known now (a label recorded after the cut still counts), so the last point is the window's own report.
The difference's interval is anytime-valid (``core.sequential``): it may be read at every cut, and the band drawn
through the points is the sequential boundary, the decision being taken at the first cut where it leaves 0.
"""

from __future__ import annotations

from shipml.adapters.registry import ModelRef
from shipml.config import Settings
from shipml.core.experiment_history import ExperimentHistory
from shipml.core.window import Window
from shipml.pipelines.experiments import ExperimentJob
from shipml.pipelines.workspace import Workspace

EXPERIMENT_CUTS = 12  # the report's experiment over time: at most this many cumulative reports
MIN_CUT_S = 60.0  # cuts at least a minute apart: a shorter window has fewer of them


def cuts(window: Window, points: int = EXPERIMENT_CUTS) -> list[float]:
    """Up to ``points`` evenly spaced ends of cumulative windows from ``window.since``, at least ``MIN_CUT_S``
    apart (always one); the last is exactly ``window.until``."""
    span = window.until - window.since
    n = max(1, min(points, int(span // MIN_CUT_S)))
    return [window.since + span * i / n for i in range(1, n)] + [window.until]


def experiment_history(
    job: ExperimentJob, model: str, window: Window, points: int = EXPERIMENT_CUTS
) -> ExperimentHistory:
    """``job``'s report over [window.since, cut) for each of ``cuts(window, points)``."""
    return ExperimentHistory(tuple(job.report(model, Window(window.since, cut)) for cut in cuts(window, points)))


def has_experiment(settings: Settings) -> bool:
    """The config runs an experiment: a champion and at least one challenger in ``serve.variants``."""
    return len(settings.serve.variants) >= 2


def experiment_models(settings: Settings) -> list[str]:
    """The registered models the experiment's variants (and shadows) serve."""
    references = [v.model for v in settings.serve.variants] + [s.model for s in settings.serve.shadow]
    return sorted({ModelRef.parse(r).name for r in references})


def monitored_experiment(
    ws: Workspace, model: str, window: Window, points: int = EXPERIMENT_CUTS
) -> ExperimentHistory | None:
    """The history of the config's experiment over ``window`` for the monitoring report of ``model``; None when the
    config has no experiment or none of its variants serves ``model``."""
    if not has_experiment(ws.settings) or model not in experiment_models(ws.settings):
        return None
    return experiment_history(ExperimentJob.of(ws), model, window, points)
