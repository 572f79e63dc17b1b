"""The guardrails an experiment takes from monitoring: ``drift`` and ``performance`` of a challenger, judged from the
newest stored monitoring report's segments of the challenger and the champion.

Both variants get the same traffic, so what hits both (inputs drifting, the labels shifting) is the world, not the
challenger: only what the challenger shows and the champion does not counts against it. A check monitoring did not
judge is left out (it does not block ship), and the notes say why. ``ab report`` and the canary both use these
(through ``ExperimentJob``).
"""

from __future__ import annotations

from shipml.core.binning import PREDICTION
from shipml.core.drift import Verdict as DriftVerdict
from shipml.core.drift import worst
from shipml.core.experiments import DRIFT, PERFORMANCE, Guardrail
from shipml.core.monitor_report import SegmentReport


def monitored_guardrails(
    champion: str, challenger: str, champion_segment: SegmentReport, challenger_segment: SegmentReport, notes: list[str]
) -> tuple[Guardrail, ...]:
    """The ``drift`` and ``performance`` guardrails of ``challenger`` from the monitoring report's segments of both
    variants; a check monitoring did not judge is left out, and ``notes`` say why.

    drift: violated when the challenger's predictions drifted from its own reference (its output no longer looks
    like what it was validated on) and the champion's did not. Input features are not counted: both variants see
    the same inputs, and an input drifting against one variant's reference and not the other's says the two were
    trained on different data, which the primary metric judges directly.
    performance: violated when a metric monitoring judged (realised or estimated) dropped below the challenger's
    own holdout value and the same metric of the champion did not drop."""
    out = []
    for name, (failed, why) in (
        (DRIFT, _drift_check(champion, champion_segment, challenger_segment)),
        (PERFORMANCE, _performance_check(champion, challenger_segment, champion_segment)),
    ):
        if why:
            notes.append(f"guardrail {name} of {challenger}: {why}")
        if failed is not None:
            out.append(Guardrail.from_check(name, failed))
    return tuple(out)


def _prediction_drift(segment: SegmentReport) -> DriftVerdict:
    return worst([d.verdict for d in segment.drift if d.feature == PREDICTION and d.decisive])


def _drift_check(
    champion: str, champion_segment: SegmentReport, challenger_segment: SegmentReport
) -> tuple[bool | None, str]:
    """(failed, or None when not judged; what the notes say, "" when nothing)."""
    mine, theirs = _prediction_drift(challenger_segment), _prediction_drift(champion_segment)
    if mine == "not_enough_data":
        return None, "not judged, monitoring did not judge its predictions' drift; it does not block ship"
    if mine != "drift":
        return False, ""
    if theirs == "drift":
        return False, f"its predictions drifted, and so did {champion}'s: the traffic moved, not the challenger"
    if theirs == "not_enough_data":
        return None, (
            f"not judged: its predictions drifted, and monitoring did not judge {champion}'s, so the traffic and "
            "the challenger cannot be told apart; it does not block ship"
        )
    return True, f"its predictions drifted from its reference and {champion}'s did not"


def _performance_check(
    champion: str, challenger_segment: SegmentReport, champion_segment: SegmentReport
) -> tuple[bool | None, str]:
    """(failed, or None when not judged; what the notes say, "" when nothing)."""
    mine, theirs = _judged(challenger_segment), _judged(champion_segment)
    if not mine:
        return None, "not judged, monitoring judged none of its metrics against its holdout; it does not block ship"
    dropped = [m for m, flagged in mine.items() if flagged]
    own = [m for m in dropped if theirs.get(m) is False]
    if own:
        return True, f"{', '.join(own)} dropped below its holdout value and {champion}'s did not"
    unknown = [m for m in dropped if m not in theirs]
    if unknown:
        return None, (
            f"not judged: {', '.join(unknown)} dropped below its holdout value, and monitoring did not judge "
            f"{champion}'s; it does not block ship"
        )
    if dropped:
        return False, f"{', '.join(dropped)} dropped, and so did {champion}'s: the world changed, not the challenger"
    return False, ""


def _judged(segment: SegmentReport) -> dict[str, bool]:
    """Per metric monitoring judged over the whole window ("realised accuracy"...): whether it dropped."""
    return {
        f"{p.estimate.kind} {p.estimate.metric}": p.dropped
        for p in segment.performance
        if p.holdout is not None and p.estimate.value is not None and p.estimate.enough_data
        and p.estimate.lower is not None and p.estimate.upper is not None
    }  # fmt: skip
