"""Set-up, data, training and offline scoring commands."""

from __future__ import annotations

import json
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shipml.cli.app import (
    ConfigOpt,
    RegistryOpt,
    _print_report,
    _progress,
    _registry,
    _settings,
    app,
    err,
    example_app,
    out,
    schema_app,
)
from shipml.cli.tables import show
from shipml.config import DEFAULT_CONFIG, Settings, settings_from_text, starter_config
from shipml.errors import ConfigError, DataValidationError, ShipmlError

if TYPE_CHECKING:
    from shipml.adapters.registry import ModelRef
    from shipml.pipelines.predict import ScoreSummary

# -- set-up ------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[Path, typer.Option("--path", help="where to write the config")] = Path(DEFAULT_CONFIG),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter shipml.yaml."""
    if path.exists() and not force:
        raise ConfigError([f"{path}: already exists (use --force to overwrite)"])
    from shipml.adapters.files import write_text_atomic

    write_text_atomic(path, starter_config())
    out.print(f"wrote {path}: edit model.name, data.path and data.target, then run `shipml train`")


@example_app.command("churn")
def example_churn(
    output: Annotated[Path, typer.Argument(help="CSV or Parquet file to write")],
    rows: Annotated[int, typer.Option(min=10, help="number of customers")] = 10_000,
    seed: Annotated[int, typer.Option(min=0, help="random seed")] = 42,
) -> None:
    """Write the synthetic customer-churn data set (deterministic for a seed)."""
    from shipml.adapters.files import AtomicTableWriter
    from shipml.examples.churn import generate_churn

    output.parent.mkdir(parents=True, exist_ok=True)
    with AtomicTableWriter(output) as writer:
        writer.write(generate_churn(rows, seed))
    out.print(f"wrote {rows} rows to {output}")


@app.command()
def quickstart(
    rows: Annotated[int, typer.Option(min=100, help="rows of example data")] = 10_000,
    seed: Annotated[int, typer.Option(min=0, help="seed of the example data")] = 42,
) -> None:
    """Generate the churn example, validate, train, register and promote it to production."""
    from shipml.adapters.files import AtomicTableWriter
    from shipml.examples.churn import churn_config, generate_churn
    from shipml.pipelines.promote import promote

    started = time.perf_counter()
    settings = settings_from_text(churn_config(), "embedded churn example")
    _, data_cfg = settings.require_training()
    data = Path(data_cfg.path or f"{settings.home}/data/churn.csv")
    data.parent.mkdir(parents=True, exist_ok=True)
    with AtomicTableWriter(data) as writer:
        writer.write(generate_churn(rows, seed))
    out.print(f"[bold]1/4[/] generated {rows} customers into {data}")
    outcome = _train(settings, data, step="[bold]2/4[/] ")
    if not outcome.gate.passed:
        raise ShipmlError("quickstart: the example model missed its gates; see above")
    name, version = outcome.version.name, outcome.version.version
    promote(_registry(settings), name, version, "production", "quickstart")
    out.print(f"[bold]4/4[/] promoted {name}/{version} to production")
    out.print(f"\ndone in {time.perf_counter() - started:.1f} s. Next:")
    for line in _next_steps(name, data):
        out.print(f"  {line}", markup=False, highlight=False)


def _next_steps(name: str, data: Path) -> list[str]:
    """What to try after the quickstart: the registry, scoring, serving and the monitoring tour."""
    venv = Path.cwd() / ".venv"
    here = Path(sys.prefix).resolve() == venv.resolve() and os.environ.get("VIRTUAL_ENV") != sys.prefix
    return [
        *(["source .venv/bin/activate"] if here else []),  # `make quickstart` ran the .venv's shipml from outside
        f"shipml models show {name}@production",
        f"shipml predict {data} -m {name}@production -o scores.parquet",
        f"shipml serve    # {name}@production on http://127.0.0.1:8000 (POST /predict)",
        "shipml ui       # MLflow's UI on http://127.0.0.1:5000",
        "# then the monitoring tour (docs/monitoring.md), to see what drifted:",
        "shipml monitor drift --window 1h",
    ]


# -- data ------------------------------------------------------------------------------


@schema_app.command("infer")
def schema_infer(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file")],
    target: Annotated[str, typer.Option(help="the column to predict")],
    output: Annotated[Path, typer.Option("-o", "--output", help="YAML file to write")] = Path("schema.yaml"),
    task: Annotated[str | None, typer.Option(help="binary, multiclass or regression (default: inferred)")] = None,
    id_column: Annotated[list[str] | None, typer.Option("--id-column", help="identifier column (repeatable)")] = None,
) -> None:
    """Infer a feature schema from data and write it as editable YAML."""
    import yaml

    from shipml.adapters.files import load_table, write_text_atomic
    from shipml.core.schema import FeatureSchema

    if task not in (None, "binary", "multiclass", "regression"):
        raise ConfigError([f"--task: must be one of binary, multiclass, regression, got {task!r}"])
    schema = FeatureSchema.infer(load_table(data), target, task, tuple(id_column or ()))  # type: ignore[arg-type]
    text = f"# inferred from {data.name} by `shipml schema infer`; edit ranges and categories as needed\n"
    write_text_atomic(output, text + yaml.safe_dump(schema.to_dict(), sort_keys=False))
    out.print(f"wrote {output}: {len(schema.features)} features, target {target!r} ({schema.target.task})")


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file")],
    config: ConfigOpt = None,
    model: Annotated[
        str | None, typer.Option(help="validate against a registered version's schema, e.g. churn@production")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="where to write the JSON report")] = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Validate a data file; exit 1 when any check fails."""
    from shipml.adapters.files import write_text_atomic
    from shipml.adapters.registry import ModelRef
    from shipml.pipelines.validate import validate_file

    ref = ModelRef.parse(model) if model is not None else None  # refused before the registry is opened
    settings = _settings(config, registry_uri)
    schema = None
    if ref is not None:
        from shipml.pipelines.predict import load_schema

        schema = load_schema(_registry(settings).load(ref, Path(settings.home) / "cache"))
    report = validate_file(settings, data, schema)
    _print_report(report)
    target = json_out or Path(settings.home) / "reports" / f"validation-{data.stem}.json"
    write_text_atomic(target, json.dumps(report.to_dict(), indent=2))
    out.print(f"report written to {target}")
    if not report.passed:
        raise typer.Exit(1)


# -- training ----------------------------------------------------------------------------


@app.command()
def train(
    config: ConfigOpt = None,
    data: Annotated[Path | None, typer.Option(help="training data (default: data.path of the config)")] = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Validate, train, evaluate and register a new version; stage it when the gates pass."""
    outcome = _train(_settings(config, registry_uri), data)
    if not outcome.gate.passed:
        raise typer.Exit(1)


def _train(settings: Settings, data: Path | None, step: str = "") -> Any:
    from shipml.pipelines.train import train_and_register

    started = time.perf_counter()
    with _progress() as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            outcome = train_and_register(settings, _registry(settings), data, progress)
        except DataValidationError as exc:
            bar.stop()
            _print_report(exc.report)
            raise ShipmlError(f"training refused: {exc.message}") from None
    result, version = outcome.result, outcome.version
    out.print(
        f"{step}trained {version.name}/{version.version} on {result.rows[0]} rows in {time.perf_counter() - started:.1f} s"
    )
    if result.duplicates_dropped:
        out.print(f"dropped {result.duplicates_dropped} duplicate row(s) (same features and target) before the split")
    title = (
        f"{version.name}/{version.version}: holdout ({result.rows[1]} rows) and {settings.training.cv_folds}-fold CV"
    )
    show(_metrics_table(title, result.holdout.metrics, result.cv), out)
    if result.holdout.confusion:
        out.print(
            f"confusion matrix (rows true, columns predicted; labels {', '.join(result.holdout.labels)}): {[list(r) for r in result.holdout.confusion]}"
        )
    for line in outcome.gate.lines:
        out.print(("[green]" if line.endswith("ok") else "[red]") + line + "[/]")
    if outcome.gate.passed:
        out.print(f"{step and '[bold]3/4[/] '}{version.name}/{version.version} registered with alias staging")
    else:
        err.print(f"[red]{version.name}/{version.version} registered but NOT staged: a gate failed[/]")
    return outcome


def _metrics_table(title: str, holdout: dict[str, float], cv: dict[str, tuple[float, float]]) -> Table:
    """Each metric on the holdout, and its mean and standard deviation over the CV folds."""
    table = Table(title=escape(title))
    for col in ("metric", "holdout", "cv mean", "cv std"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, value in holdout.items():
        mean, std = cv[name]
        table.add_row(escape(name), f"{value:.4f}", f"{mean:.4f}", f"{std:.4f}")
    return table


class Engine(StrEnum):
    """Where `shipml predict` runs."""

    local = "local"
    spark = "spark"


@app.command()
def predict(
    data: Annotated[
        Path, typer.Argument(help="CSV or Parquet file to score (--engine spark: Parquet file or directory)")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="registered version, e.g. churn@production or churn/3")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="CSV or Parquet file to write (--engine spark: a Parquet directory)")
    ],
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    chunk_rows: Annotated[int | None, typer.Option(min=1, help="rows per chunk")] = None,
    engine: Annotated[
        Engine, typer.Option(help="local: this machine, chunk by chunk; spark: a Spark application (shipml[spark])")
    ] = Engine.local,
    master: Annotated[
        str | None, typer.Option(help="--engine spark: the Spark master (default: predict.spark_master, local[*])")
    ] = None,
) -> None:
    """Score a file with a registered version (validated against its schema first)."""
    from shipml.adapters.registry import ModelRef

    ref = ModelRef.parse(model)  # a bad reference is refused before the registry is opened (or created)
    if master is not None and engine is not Engine.spark:
        raise ShipmlError("--master is for --engine spark")
    settings = _settings(config, registry_uri)
    try:
        if engine is Engine.spark:
            summary = _predict_on_spark(settings, ref, data, output, chunk_rows, master)
        else:
            summary = _predict_here(settings, ref, data, output, chunk_rows)
    except DataValidationError as exc:
        _print_report(exc.report)
        raise ShipmlError(f"nothing scored: {exc.message}") from None
    out.print(f"scored {summary.rows} rows with {summary.model}/{summary.version} into {summary.output}")


def _predict_here(settings: Settings, ref: ModelRef, data: Path, output: Path, chunk_rows: int | None) -> ScoreSummary:
    from shipml.adapters.native import KernelLoader
    from shipml.pipelines.predict import score_file

    with _progress() as bar:
        task = bar.add_task("scoring", total=None)
        try:
            return score_file(
                _registry(settings),
                ref,
                data,
                output,
                cache_dir=Path(settings.home) / "cache",
                chunk_rows=chunk_rows or settings.predict.chunk_rows,
                kernels=KernelLoader(settings.native),
                fast_path=settings.serve.fast_path,
                progress=lambda n: bar.advance(task, n),
            )
        finally:
            bar.stop()


def _predict_on_spark(
    settings: Settings, ref: ModelRef, data: Path, output: Path, chunk_rows: int | None, master: str | None
) -> ScoreSummary:
    from shipml.pipelines.predict_spark import score_with_spark  # pyspark: only this command imports it

    return score_with_spark(
        _registry(settings),
        ref,
        data,
        output,
        master=master or settings.predict.spark_master,
        cache_dir=Path(settings.home) / "cache",
        work_dir=Path(settings.home),
        chunk_rows=chunk_rows or settings.predict.chunk_rows,
        connect_timeout_s=settings.predict.spark_connect_timeout_s,
        native=settings.native,
        fast_path=settings.serve.fast_path,
    )
