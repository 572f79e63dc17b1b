"""A person at an 80-column terminal can read every table the CLI prints: each value whole, none cut to "va…".

Each table is printed by the command's own code on an 80-column console; every value a user needs must be found
whole in the output (within its column when the table wraps or folds it, on its line in a block), and no line of
a table is wider than the terminal.
"""

from __future__ import annotations

import importlib
import io
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from shipml.adapters.registry import AliasMove, ModelRef, VersionInfo
from shipml.adapters.store import PredictionStore
from shipml.cli import data, experiments, models, monitor
from shipml.cli.tables import FOLD_MIN, show
from shipml.core.validation import ValidationIssue, ValidationReport
from tests.support.report import sample_report, synthetic_report
from tests.unit.pipelines.test_experiments_job import labelled, log, report
from tests.unit.pipelines.test_experiments_job import settings as experiment_settings

WIDTH = 80
app = importlib.import_module("shipml.cli.app")  # the module (``shipml.cli.app`` names the typer app)
BOX = "│┃┏┓┗┛┡┩└┘━─╇┳┻┯┷"


def terminal(width: int = WIDTH) -> Console:
    return Console(width=width, record=True, file=io.StringIO(), color_system=None, soft_wrap=True)


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Console:
    """An 80-column terminal that every command module prints on (stdout and stderr)."""
    monkeypatch.chdir(tmp_path)  # no shipml.yaml of the machine is read
    console = terminal()
    for module in (app, data, models, monitor, experiments):
        monkeypatch.setattr(module, "out", console)
        if hasattr(module, "err"):
            monkeypatch.setattr(module, "err", console)
    return console


def streams(text: str) -> list[str]:
    """The printed text, whitespace removed, as the streams a value is read along: each table column top to bottom
    (a value the table wraps or folds goes on in its column on the next line), and all the other lines in order
    (a value of a block folds onto the next line)."""
    found: list[str] = []
    columns: dict[int, list[str]] = {}
    plain: list[str] = []
    for line in text.splitlines():
        if "│" in line:
            for i, cell in enumerate(line.split("│")):
                columns.setdefault(i, []).append(cell)
            continue
        found += ["".join(cells) for cells in columns.values()]
        columns = {}
        plain.append(line)
    found += ["".join(cells) for cells in columns.values()] + ["\n".join(plain)]
    return ["".join(s.split()) for s in found]


def assert_readable(console: Console, *values: str) -> str:
    """Every value is shown whole, nothing is ellipsised, and no table line is wider than the terminal."""
    text = console.export_text()
    assert "…" not in text, text
    too_wide = [line for line in text.splitlines() if len(line) > console.width and set(line) & set(BOX)]
    assert not too_wide, too_wide
    haystacks = streams(text)
    missing = [v for v in values if not any("".join(v.split()) in s for s in haystacks)]
    assert not missing, f"not shown whole: {missing}\n{text}"
    return text


# -- the layout rule ---------------------------------------------------------------------------------------------


def test_a_table_that_fits_is_printed_as_a_table() -> None:
    console = terminal()
    table = Table("model", "latest", "production")
    table.add_row("churn", "12", "11")
    show(table, console)
    assert "│ churn │ 12     │ 11         │" in console.export_text()


def test_a_table_too_wide_becomes_a_block_per_row_with_every_value() -> None:
    console = terminal()
    table = Table(*(f"column {i}" for i in range(10)), title="wide")
    table.add_row(*(f"value-{i}-of-row-one" for i in range(10)))
    table.add_row(*(f"value-{i}-of-row-two" for i in range(10)))
    show(table, console)
    text = assert_readable(console, *(f"value-{i}-of-row-{r}" for i in range(10) for r in ("one", "two")))
    lines = text.splitlines()
    assert lines[0] == "wide"
    assert "column 0 value-0-of-row-one" in lines and "column 0 value-0-of-row-two" in lines
    assert "  column 9  value-9-of-row-two" in [line.rstrip() for line in lines]


def test_a_free_text_column_wraps_at_words_and_folds_only_a_word_too_long() -> None:
    console = terminal()
    table = Table("time (UTC)", "user", "alias", "from", "to", "reason")
    reason = "promoted by the canary after 100 % with every guardrail holding " + "x" * 40
    table.add_row("2026-01-05 10:00:00", "someone", "production", "11", "12", reason)
    show(table, console, wrap=("reason",))
    text = assert_readable(console, reason, "2026-01-05 10:00:00", "production")
    assert "│ promoted by the " in text  # a table still, the reason wrapped at a word
    assert max(len(line) for line in text.splitlines()) <= WIDTH


words = st.text(alphabet=string.ascii_letters + string.digits + "._-/", min_size=1, max_size=FOLD_MIN)


@settings(max_examples=60, deadline=None)
@given(
    headers=st.lists(words, min_size=1, max_size=14, unique=True),
    rows=st.lists(st.lists(st.lists(words, min_size=1, max_size=6), min_size=14, max_size=14), max_size=4),
    wrapping=st.sets(st.integers(0, 13)),
    width=st.integers(60, 240),
)
def test_at_any_width_every_value_is_shown_whole(
    headers: list[str], rows: list[list[list[str]]], wrapping: set[int], width: int
) -> None:
    console = terminal(width)
    table = Table(*headers)
    values = [[" ".join(cell) for cell in row[: len(headers)]] for row in rows]
    for row in values:
        table.add_row(*row)
    show(table, console, wrap=[h for i, h in enumerate(headers) if i in wrapping])
    text = console.export_text()
    assert "…" not in text
    for row in values:
        for value in row:
            for word in value.split():  # a word no longer than FOLD_MIN is never broken, wherever it is
                assert word in text, (word, text)


# -- the tables of each command ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(f"sqlite:///{tmp_path}/predictions.db")
    yield s
    s.close()


def test_ab_report_at_80_columns_is_a_block_per_variant(screen: Console, store: PredictionStore) -> None:
    keys = [f"customer-{i}" for i in range(400)]
    log(store, "champion", labelled(400, 0.9), keys=keys)
    log(store, "challenger", labelled(400, 0.8), keys=[f"c-{i}" for i in range(400)])
    log(store, "candidate", labelled(400, 0.85), keys=keys, role="shadow")
    shadowed = experiment_settings(serve={"shadow": [{"name": "candidate", "model": "churn/3", "fraction": 1.0}]})
    r = report(store, shadowed)

    experiments._print(r)

    values = []
    for v in r.variants:
        values += [f"variant {v.name}", v.role, v.model, f"{v.share:g}", str(v.requests), str(v.errors)]
        values += [f"{v.p99_ms:.1f}", str(v.units), f"{v.labelled}/{v.matured}"]
        values.append(experiments._interval(v.metric.mean, v.metric.lower, v.metric.upper))
    for c in r.challengers:
        d, lift = c.primary.difference, c.primary.relative_lift
        values += [experiments._interval(d.estimate, d.lower, d.upper, "+"), c.decision.verdict]
        values.append(experiments._interval(lift.estimate, lift.lower, lift.upper, "%"))
    values += [f"shadow, agrees {r.shadows[0].agreement:.1%}", f"verdict: {r.verdict}"]
    text = assert_readable(screen, *values)
    assert "┃ variant" not in text  # 13 columns do not fit 80: blocks, as kubectl and gh do


def test_ab_report_on_a_wide_terminal_is_one_table(store: PredictionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    log(store, "champion", labelled(200, 0.9))
    log(store, "challenger", labelled(200, 0.8))
    r = report(store)
    wide = terminal(240)
    monkeypatch.setattr(experiments, "out", wide)
    monkeypatch.setattr(experiments, "err", wide)
    experiments._print(r)
    rows = [line for line in wide.export_text().splitlines() if line.startswith("│ challenger ")]
    assert len(rows) == 1 and r.challengers[0].decision.verdict in rows[0]


@pytest.mark.parametrize("which", ["sample", "synthetic"])
def test_monitor_drift_at_80_columns(screen: Console, which: str) -> None:
    drift = sample_report() if which == "sample" else synthetic_report()
    monitor._print(drift, 7)
    values = [f"verdict: {drift.verdict}"]
    for s in drift.segments:
        values.append(f"{s.rows} rows")
        for d in s.drift:
            if d.decisive:
                statistic = d.statistic + (f" (p={d.p_value:.3g})" if d.p_value is not None else "")
                values += [d.feature, statistic, f"{d.value:.4f}", f"{d.threshold_warn:g}/{d.threshold_drift:g}"]
                values += [str(d.rows), d.verdict]
        for p in s.performance:
            e = p.estimate
            if e.value is not None:
                values.append(f"{e.value:.4f} [{e.lower:.4f}, {e.upper:.4f}]")
            values += [e.metric, e.kind, str(e.count), "-" if p.holdout is None else f"{p.holdout:.4f}"]
    text = assert_readable(screen, *values)
    assert "┃ feature" in text  # the features stay a table at 80 columns


def test_validate_at_80_columns(screen: Console) -> None:
    issues = (
        ValidationIssue("monthly_charges", "min", 3, ("-5.0", "-0.01"), limit=0.0),
        ValidationIssue("contract", "allowed_categories", 7, ("lifetime-with-a-very-long-name", "two year plus")),
        ValidationIssue("payment_method_of_the_customer", "not_nullable", 8, ("null",)),
        ValidationIssue("age", "max", 2, ("400.0",), "warning", limit=120.0),
    )
    validation = ValidationReport("new-customers-2026-01.csv", 300, 12, issues)
    app._print_report(validation)
    values = [i.column for i in issues] + [i.label for i in issues] + [str(i.failing) for i in issues]
    values += [", ".join(i.examples) for i in issues] + ["error", "warning"]
    assert_readable(screen, *values)


def test_train_metrics_at_80_columns(screen: Console) -> None:
    holdout = {"accuracy": 0.7685, "precision": 0.6893, "roc_auc": 0.8395, "log_loss": 0.4682}
    cv = {k: (v - 0.01, 0.0123) for k, v in holdout.items()}
    data.out.print(data._metrics_table("churn/12: holdout (2000 rows) and 5-fold CV", holdout, cv))
    values = [f"{k}" for k in holdout] + [f"{v:.4f}" for v in holdout.values()] + ["0.0123"]
    values += [f"{m:.4f}" for m, _ in cv.values()]
    assert_readable(screen, *values)


class Registry:
    """What the registry answers the `models` commands, with values as long as real ones."""

    created = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    params: ClassVar = {
        "estimator": ("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.HistGradientBoostingClassifier"),
        "model.min_weight_fraction_leaf": ("0.0", "0.0"),
        "model.min_samples_split": ("2", "4"),
        "model.class_weight": ("None", "{0: 1, 1: 3}"),
    }
    metrics: ClassVar = {
        "cv_roc_auc_mean": (0.819394, 0.826615),
        "calibration_error": (0.0, 0.186645),
        "f1": (0.66, 0.66),
    }

    def list_models(self) -> list[tuple[str, str, dict[str, str]]]:
        return [
            ("churn", "12", {"production": "11", "staging": "12", "previous": "9"}),
            ("customer-lifetime-value-regressor", "3", {"production": "3"}),
        ]

    def get_version(self, name: str, version: str) -> VersionInfo:
        i = 0 if version == "11" else 1
        return VersionInfo(
            name, version, "704ad8a2ebac49dc85feded604b4af37", self.created, ("production",),
            {"shipml.data_sha256": "7378624d9a5d2187a29c7feb716fd03871446a083e3b722a3601979f27bf51c7"},
            metrics={k: v[i] for k, v in self.metrics.items()}, params={k: v[i] for k, v in self.params.items()},
        )  # fmt: skip

    def resolve(self, ref: ModelRef) -> VersionInfo:
        return self.get_version(ref.name, "11")

    def history(self, name: str) -> list[AliasMove]:
        return [
            AliasMove("2026-01-05T10:00:00.123456+00:00", "root", "staging", None, "1", "gates passed: gate roc_auc: "
                      "0.8456 >= 0.75 ok"),
            AliasMove("2026-01-06T09:30:00.5+00:00", "ci-deployer", "production", "10", "11", "promoted by the canary "
                      "after 100 % with every guardrail holding (error_rate, latency_p99)"),
        ]  # fmt: skip


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    stand_in = Registry()
    monkeypatch.setattr(models, "_registry", lambda settings: stand_in)
    return stand_in


def test_models_list_at_80_columns(screen: Console, registry: Registry) -> None:
    models.models_list(None, None)
    assert_readable(screen, "customer-lifetime-value-regressor", "churn", "12", "11", "9", "3")


def test_models_show_at_80_columns(screen: Console, registry: Registry) -> None:
    models.models_show("churn@production", None, None)
    values = [f"{k}" for k in registry.metrics] + [f"{v[0]:.6g}" for v in registry.metrics.values()]
    assert_readable(screen, "churn/11", "7378624d9a5d2187a29c7feb716fd03871446a083e3b722a3601979f27bf51c7", *values)


def test_models_history_at_80_columns(screen: Console, registry: Registry) -> None:
    models.models_history("churn", None, None, None)
    moves = registry.history("churn")
    values = ["2026-01-05 10:00:00", "2026-01-06 09:30:00", "ci-deployer", "production", "staging", "10", "11"]
    text = assert_readable(screen, *values, *(m.reason for m in moves))
    assert "┃ time (UTC)" in text  # a table: only the reason wraps


def test_models_compare_at_80_columns(screen: Console, registry: Registry) -> None:
    models.models_compare("churn", "11", "12", None, None, True)
    values = [k for k in (*registry.params, *registry.metrics)]
    values += [v for pair in registry.params.values() for v in pair]
    values += [f"{v:.6g}" for pair in registry.metrics.values() for v in pair]
    assert_readable(screen, *values)


def test_models_compare_differences_only(screen: Console, registry: Registry) -> None:
    models.models_compare("churn", "11", "12", None, None, False)
    text = screen.export_text()
    assert "min_samples_split" in text and "min_weight_fraction_leaf" not in text and "f1 " not in text
