"""The canary's state machine: when it advances, holds, rolls back and promotes."""

from __future__ import annotations

import pytest

from shipml.core.canary import (
    Canary,
    CanaryEvent,
    Evidence,
    abort,
    check,
    evidence_of,
    parse_steps,
    promoted,
    requests_needed,
    step_alpha,
    step_window,
)
from shipml.core.experiment_report import ChallengerResult
from shipml.core.experiments import Decision, Guardrail, compare, variant_stats
from shipml.errors import ConfigError

START = 1_000.0


def canary(**changes: object) -> Canary:
    base = Canary("churn", "7", "main", (10.0, 50.0, 100.0), 60.0, 100, START, START, updated_at=START)
    return Canary(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_a_step_goes_on_after_its_interval_with_traffic_and_every_guardrail_holding() -> None:
    c = canary()
    assert check(c, Evidence(step_requests=500), START + 59).event is None  # the interval is not over
    change = check(c, Evidence(step_requests=500), START + 60)
    assert change.event == "advanced" and change.state.step == 1 and change.state.weight == 0.5
    assert change.state.step_started_at == START + 60 and not change.promote


def test_a_violated_guardrail_rolls_back_at_once_whatever_the_steps_age() -> None:
    change = check(canary(step=1), Evidence(("guardrail error_rate crossed its boundary",), 3), START + 1)
    assert change.event == "rolled_back" and change.state.status == "rolled_back"
    assert change.state.weight == 0.0 and "error_rate" in change.state.reason and not change.promote
    assert check(change.state, Evidence(step_requests=10_000), START + 1_000).event is None  # ended: stays ended


def test_without_traffic_it_holds_and_never_advances_then_goes_on_when_traffic_returns() -> None:
    c = canary()
    held = check(c, Evidence(step_requests=3), START + 60)
    assert held.event == "held" and held.state.status == "held" and held.state.step == 0
    assert "3 request(s)" in held.state.reason and held.state.weight == 0.1
    for t in range(61, 400, 30):  # hours of no traffic: still the first step, logged once
        again = check(held.state, Evidence(step_requests=3), START + t)
        assert again.event is None and again.state.step == 0
    resumed = check(held.state, Evidence(step_requests=100), START + 400)
    assert resumed.event == "advanced" and resumed.state.status == "running" and resumed.state.step == 1


def test_without_min_requests_each_step_waits_for_what_the_latency_guardrail_needs_at_its_share() -> None:
    c = canary(min_requests=None)  # steps 10, 50, 100: two judged, each at alpha / 2
    at_10, at_50 = c.needed(0.05), canary(min_requests=None, step=1).needed(0.05)
    assert at_10 == requests_needed(10.0, 0.025) == 3_540  # a level above the table's: not scaled down
    assert at_50 == requests_needed(50.0, 0.025) == 8_300
    held = check(c, Evidence(step_requests=at_10 - 1), START + 60)
    assert held.event == "held" and held.state.hold == "traffic" and f"under the {at_10} needed" in held.state.reason
    advanced = check(held.state, Evidence(step_requests=at_10), START + 90)
    assert advanced.event == "advanced" and advanced.state.needed(0.05) == at_50
    # given, --min-requests is every step's figure; a state stored with one (every earlier version) keeps it
    assert canary(step=1).needed(0.05) == 100
    assert Canary.from_json(c.to_json()).min_requests is None


def test_the_requests_a_step_needs_grow_with_its_share_and_with_more_judged_steps() -> None:
    shares = [0.5, 1.0, 3.0, 5.0, 10.0, 25.0, 50.0, 60.0, 75.0, 90.0, 95.0, 99.0]
    needs = [requests_needed(p, 0.01) for p in shares]
    assert needs == sorted(needs) and needs[1] == 2_330 and needs[6] == 8_300
    assert 3_030 < requests_needed(7.5, 0.01) < 3_540  # between the table's steps
    assert requests_needed(95.0, 0.01) == 3_760 * 19  # above 90 %: 3,760 of the champion's beside it
    assert requests_needed(50.0, 0.001) == 12_450  # ten times lower a level: log(1000) / log(100) = 1.5 times
    assert requests_needed(50.0, 0.05) == 8_300  # a higher level needs fewer: the table's figure, not less


def test_a_hold_is_a_state_logged_once_per_kind_and_left_when_the_step_goes_on() -> None:
    traffic = check(canary(), Evidence(step_requests=3), START + 60)
    assert traffic.state.hold == "traffic" and traffic.event == "held"
    # the same hold again is nothing new, whatever the reason's text would say now
    assert check(traffic.state, Evidence(step_requests=50), START + 90).event is None
    evidence = check(traffic.state, Evidence(step_requests=500, undecided=("guardrail error_rate ...",)), START + 120)
    assert evidence.event == "held" and evidence.state.hold == "evidence"
    assert "waiting for evidence: guardrail error_rate ..." in evidence.state.reason
    advanced = check(evidence.state, Evidence(step_requests=500), START + 150)
    assert advanced.event == "advanced" and advanced.state.hold is None and advanced.state.status == "running"
    assert Canary.from_json(evidence.state.to_json()) == evidence.state


def test_a_state_stored_before_holds_were_typed_still_reads() -> None:
    stored = canary(status="held", reason="held at 10 %: not enough traffic: ...").to_json()
    old = stored.replace(', "hold": null', "")
    assert '"hold"' not in old and Canary.from_json(old).hold is None


def test_each_change_logs_one_typed_event_that_round_trips_through_json() -> None:
    change = check(canary(), Evidence(step_requests=500), START + 60)
    event = change.logged()
    assert event == CanaryEvent("advanced", "7", 1, 50.0, "running", change.state.reason, START + 60)
    assert CanaryEvent.from_json(event.to_json()) == event
    assert CanaryEvent.from_json(event.to_json(), ts=START + 61).ts == START + 61  # the store's time wins
    assert check(canary(), Evidence(step_requests=500), START + 1).logged() is None
    rolled = check(canary(step=1), Evidence(("guardrail x crossed",)), START + 1).logged()
    assert rolled is not None and (rolled.event, rolled.percent, rolled.status) == ("rolled_back", 50.0, "rolled_back")


def test_an_undecided_guardrail_holds_the_step_until_it_holds() -> None:
    waiting = check(canary(), Evidence(step_requests=500, undecided=("guardrail latency_p99 ...",)), START + 60)
    assert waiting.event == "held" and "waiting for evidence" in waiting.state.reason
    assert check(waiting.state, Evidence(step_requests=900, undecided=("x",)), START + 90).event is None
    assert check(waiting.state, Evidence(step_requests=900), START + 120).event == "advanced"


def test_after_the_last_judged_step_the_decision_comes_first_then_the_promotion_then_nothing_more() -> None:
    decided = check(canary(step=1), Evidence(step_requests=100), START + 60)
    assert decided.promote and decided.event == "promoting" and decided.state.status == "promoting"
    assert decided.state.step == 2 and decided.state.step_started_at == START  # 100 % is never a judged step
    assert decided.state.weight == 1.0 and decided.state.serving  # the candidate keeps its 100 % until promoted
    assert not decided.state.active and not decided.state.ended
    assert check(decided.state, Evidence(("guardrail x crossed",)), START + 61).event is None  # decided: no rollback
    assert abort(decided.state, START + 61, "too late").event is None  # nor an abort
    done = promoted(decided.state, START + 62)
    assert done.event == "promoted" and done.state.status == "promoted" and done.state.ended
    assert done.state.weight == 0.0 and not done.state.serving
    assert promoted(done.state, START + 63).event is None


def test_abort_stops_an_active_canary_and_the_state_round_trips_through_json() -> None:
    stopped = abort(canary(step=1), START + 5, "by hand").state
    assert stopped.status == "aborted" and stopped.weight == 0.0
    assert Canary.from_json(stopped.to_json()) == stopped
    assert abort(stopped, START + 6, "again").event is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,5,x", "percentages separated by commas"),
        ("5,1,100", "must increase"),
        ("1,5,50", "the last step must be 100"),
        ("0,50,100", "(0, 100]"),
        ("10,150", "(0, 100]"),
    ],
)
def test_bad_steps_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--steps") as raised:
        parse_steps(text)
    assert message in str(raised.value.lines()[0])


def test_steps_parse() -> None:
    assert parse_steps("1,5,10,25,50,100") == (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)


def test_required_guardrails_parse_and_a_name_that_is_not_one_is_refused() -> None:
    from shipml.core.canary import parse_required
    from shipml.core.experiments import GUARDRAILS

    assert parse_required("error_rate, latency_p99") == ("error_rate", "latency_p99")
    assert parse_required(",".join(GUARDRAILS)) == GUARDRAILS  # every guardrail `ab report` judges can be required
    assert parse_required("none") == ()
    with pytest.raises(ConfigError, match="--require: errors is not a guardrail"):
        parse_required("errors")


def test_no_verdict_is_taken_at_100_percent_a_canary_stored_there_is_promoted() -> None:
    """S1: at 100 % the champion serves nobody, so nothing there can be compared; a state an earlier version left
    at 100 % (its step before held) is promoted, whatever the evidence says."""
    change = check(canary(step=2), Evidence(("guardrail x crossed",), 0), START + 1)
    assert change.event == "promoting" and change.promote and change.state.percent == 100.0


def test_a_single_100_percent_step_is_refused_since_nothing_would_be_judged() -> None:
    with pytest.raises(ConfigError, match="below 100"):
        parse_steps("100")
    assert canary().judged == 2 and step_alpha(canary(), 0.05) == pytest.approx(0.025)


def test_each_step_is_judged_on_its_own_window_once_the_candidate_serves_and_the_workers_settled() -> None:
    c = canary(step=1, step_started_at=START + 600)
    window = step_window(c, START + 700, 15.0, START + 600.5)
    assert window.since == START + 615 and window.until > START + 700
    assert step_window(c, START + 700, 15.0, START + 640).since == START + 640  # the candidate served late
    empty = step_window(c, START + 700, 15.0, None)  # not served yet: nothing to judge
    assert empty.since == START + 700 and empty.until - empty.since < 1e-3
    short = canary(interval_s=4.0)
    assert step_window(short, START + 10, 15.0, START).since == START + 2.0  # at most half the interval
    assert step_window(c, START + 601, 15.0, START + 600).until >= START + 615  # never an inverted window
    # it ends a commit's wait before the check (a request's later version may not be committed yet), at most half
    # the interval before
    assert abs(step_window(c, START + 700, 15.0, START + 600.5, 5.0).until - (START + 695)) < 1e-3
    assert abs(step_window(short, START + 10, 15.0, START, 5.0).until - (START + 8)) < 1e-3


def test_each_canary_has_its_own_salt_derived_alike_everywhere() -> None:
    a, b = canary(), canary(candidate="8")
    assert a.routing_salt == canary().routing_salt and a.routing_salt != b.routing_salt
    assert canary(salt="pinned").routing_salt == "pinned"
    old = canary().to_json().replace(', "salt": ""', "")
    assert '"salt"' not in old and Canary.from_json(old).routing_salt == a.routing_salt


def _challenger(guardrails: tuple[Guardrail, ...], worse: bool = False, verdict: str = "continue") -> ChallengerResult:
    control = variant_stats("main", [1.0] * 180 + [0.0] * 20, "proportion")
    treatment = variant_stats("canary", ([1.0] * 100 + [0.0] * 100) if worse else [1.0] * 180 + [0.0] * 20,
                              "proportion")  # fmt: skip
    reasons = ("sample ratio mismatch (sequential p = 1e-06 < 0.001): main 900, canary 10",)
    return ChallengerResult("canary", compare(control, treatment), guardrails, None, Decision(verdict, reasons))  # type: ignore[arg-type]


def test_the_evidence_of_a_step_rolls_back_on_a_violation_a_worse_metric_or_a_sample_ratio_mismatch() -> None:
    holds = Guardrail("error_rate", -0.01, 0.005, 0.01)
    violated = Guardrail("latency_p99", 0.02, 0.05, 0.01)
    undecided = Guardrail("latency_p99", -0.01, 0.03, 0.01)
    assert evidence_of(_challenger((holds,)), 500, ("error_rate",), 100) == Evidence((), 500, ())
    rolled = evidence_of(_challenger((holds, violated)), 500, ("error_rate",), 100)
    assert len(rolled.violations) == 1 and "latency_p99 crossed its boundary" in rolled.violations[0]
    worse = evidence_of(_challenger((holds,), worse=True), 500, (), 100)
    assert "significantly worse" in worse.violations[0]
    assert evidence_of(_challenger((holds,), worse=True), 500, (), 1_000).violations == ()  # under min_count
    srm = evidence_of(_challenger((holds,), verdict="unhealthy"), 500, (), 100)
    assert srm.violations[0].startswith("in this step: sample ratio mismatch")
    waiting = evidence_of(_challenger((holds, undecided)), 500, ("error_rate", "latency_p99"), 100)
    assert waiting.violations == () and "latency_p99" in waiting.undecided[0]
    assert evidence_of(_challenger((holds, undecided)), 500, ("error_rate",), 100).undecided == ()
