"""The `shipml` command: parse arguments, call one pipeline, print the result."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipml.config import DEFAULT_CONFIG, Settings, load_settings, settings_from_text, starter_config
from shipml.core.validation import ValidationReport
from shipml.errors import ConfigError, DataValidationError, ShipmlError

app = typer.Typer(
    help="shipml: from a CSV to a registered, promoted, served model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Registered models: list, show, promote, rollback, compare, history.", no_args_is_help=True
)
schema_app = typer.Typer(help="Feature schemas.", no_args_is_help=True)
example_app = typer.Typer(help="Example data sets.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the prediction service.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(schema_app, name="schema")
app.add_typer(example_app, name="example")
app.add_typer(keys_app, name="keys")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
]
RegistryOpt = Annotated[
    str | None, typer.Option("--registry-uri", help="MLflow tracking/registry URI (env SHIPML_REGISTRY_URI)")
]


def _settings(config: Path | None, registry_uri: str | None = None) -> Settings:
    overrides = {"registry": {"uri": registry_uri}} if registry_uri else None
    return load_settings(config, overrides=overrides)


def _registry(settings: Settings) -> Any:
    from shipml.adapters.mlflow_registry import MlflowRegistry

    return MlflowRegistry(settings.registry)


@contextmanager
def _progress() -> Iterator[Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        yield bar


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
    for line in (
        "source .venv/bin/activate",
        "shipml models list",
        f"shipml models show {name}@production",
        f"shipml predict {data} --model {name}@production -o scores.parquet",
        "shipml ui    # MLflow's UI on http://127.0.0.1:5000",
    ):
        out.print(f"  {line}")


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
    from shipml.pipelines.validate import validate_file

    settings = _settings(config, registry_uri)
    schema = None
    if model is not None:
        from shipml.adapters.mlflow_registry import ModelRef
        from shipml.pipelines.predict import load_schema

        schema = load_schema(_registry(settings).load(ModelRef.parse(model), Path(settings.home) / "cache"))
    report = validate_file(settings, data, schema)
    _print_report(report)
    target = json_out or Path(settings.home) / "reports" / f"validation-{data.stem}.json"
    write_text_atomic(target, json.dumps(report.to_dict(), indent=2))
    out.print(f"report written to {target}")
    if not report.passed:
        raise typer.Exit(1)


def _print_report(report: ValidationReport) -> None:
    if not report.issues:
        out.print(f"[green]✔[/] {report.source}: {report.rows} rows, {report.columns} columns, all checks passed")
        return
    table = Table(title=f"{report.source}: {report.rows} rows, {report.columns} columns")
    for col in ("column", "rule", "failing", "examples", "severity"):
        table.add_column(col, justify="right" if col == "failing" else "left")
    for i in report.issues:
        style = "red" if i.severity == "error" else "yellow"
        table.add_row(
            escape(i.column), escape(i.rule), str(i.failing), escape(", ".join(i.examples)), f"[{style}]{i.severity}[/]"
        )
    out.print(table)
    mark = "[green]✔ passed[/]" if report.passed else "[red]✘ failed[/]"
    out.print(f"{mark}: {len(report.errors)} error(s), {len(report.issues) - len(report.errors)} warning(s)")


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
            _print_report(exc.report)  # type: ignore[arg-type]
            raise ShipmlError(f"training refused: {exc.message}") from None
    result, version = outcome.result, outcome.version
    out.print(
        f"{step}trained {version.name}/{version.version} on {result.rows[0]} rows in {time.perf_counter() - started:.1f} s"
    )
    table = Table(
        title=f"{version.name}/{version.version}: holdout ({result.rows[1]} rows) and {settings.training.cv_folds}-fold CV"
    )
    for col in ("metric", "holdout", "cv mean", "cv std"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, value in result.holdout.metrics.items():
        mean, std = result.cv[name]
        table.add_row(name, f"{value:.4f}", f"{mean:.4f}", f"{std:.4f}")
    out.print(table)
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


@app.command()
def predict(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file to score")],
    model: Annotated[str, typer.Option("--model", "-m", help="registered version, e.g. churn@production or churn/3")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write")],
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    chunk_rows: Annotated[int | None, typer.Option(min=1, help="rows per chunk")] = None,
) -> None:
    """Score a file with a registered version (validated against its schema first)."""
    from shipml.adapters.mlflow_registry import ModelRef
    from shipml.pipelines.predict import score_file

    settings = _settings(config, registry_uri)
    ref = ModelRef.parse(model)
    with _progress() as bar:
        task = bar.add_task("scoring", total=None)
        try:
            summary = score_file(
                _registry(settings),
                ref,
                data,
                output,
                cache_dir=Path(settings.home) / "cache",
                chunk_rows=chunk_rows or settings.predict.chunk_rows,
                progress=lambda n: bar.advance(task, n),
            )
        except DataValidationError as exc:
            bar.stop()
            _print_report(exc.report)  # type: ignore[arg-type]
            raise ShipmlError(f"nothing scored: {exc.message}") from None
    out.print(f"scored {summary.rows} rows with {summary.model}/{summary.version} into {summary.output}")


# -- models ------------------------------------------------------------------------------


@models_app.command("list")
def models_list(config: ConfigOpt = None, registry_uri: RegistryOpt = None) -> None:
    """Registered models with their latest version and aliases."""
    rows = _registry(_settings(config, registry_uri)).list_models()
    table = Table("model", "latest", "production", "staging", "previous")
    for name, latest, aliases in rows:
        table.add_row(name, latest, *(aliases.get(a, "-") for a in ("production", "staging", "previous")))
    out.print(table if rows else "no registered models yet: run `shipml train`")


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION")],
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """One version: aliases, lineage tags, metrics."""
    from shipml.adapters.mlflow_registry import ModelRef

    info = _registry(_settings(config, registry_uri)).resolve(ModelRef.parse(ref))
    out.print(
        f"[bold]{info.name}/{info.version}[/]  aliases: {', '.join(info.aliases) or '-'}  created: {info.created_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    out.print(f"run: {info.run_id}")
    for key, value in sorted(info.tags.items()):
        out.print(f"  {key} = {value}")
    table = Table("metric", "value")
    for key, value in sorted(info.metrics.items()):
        table.add_row(key, f"{value:.6g}")
    out.print(table)


@models_app.command("promote")
def models_promote(
    name: str,
    version: str,
    to: Annotated[str, typer.Option(help="staging or production")] = "production",
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Give a version the alias staging or production (the old production becomes previous)."""
    from shipml.pipelines.promote import promote

    _print_moves(
        promote(_registry(_settings(config, registry_uri)), name, version, to, reason or "manual promotion"), name
    )


@models_app.command("rollback")
def models_rollback(
    name: str,
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Swap production and previous."""
    from shipml.pipelines.promote import rollback

    _print_moves(rollback(_registry(_settings(config, registry_uri)), name, reason or "manual rollback"), name)


def _print_moves(moves: list[Any], name: str) -> None:
    for m in moves:
        out.print(f"{name}@{m.alias}: {m.from_version or '-'} -> {m.to_version or '-'}  ({escape(m.reason)})")


@models_app.command("history")
def models_history(
    name: str,
    at: Annotated[
        datetime | None, typer.Option(help="also say which version was in production at this time (UTC)")
    ] = None,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Every alias move of a model: time, user, alias, from, to, reason."""
    from shipml.pipelines.promote import holder_at

    moves = _registry(_settings(config, registry_uri)).history(name)
    table = Table("time (UTC)", "user", "alias", "from", "to", "reason")
    for m in moves:
        table.add_row(m.time, escape(m.user), m.alias, m.from_version or "-", m.to_version or "-", escape(m.reason))
    out.print(table)
    if at is not None:
        when = at if at.tzinfo else at.replace(tzinfo=UTC)
        holder = holder_at(moves, "production", when)
        out.print(f"in production at {when.isoformat()}: {f'{name}/{holder}' if holder else 'nothing'}")


@models_app.command("compare")
def models_compare(
    name: str,
    a: str,
    b: str,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    all_rows: Annotated[bool, typer.Option("--all", help="also show what is equal")] = True,
) -> None:
    """Metrics and params of two versions side by side; differences marked with *."""
    from shipml.pipelines.promote import compare

    rows = compare(_registry(_settings(config, registry_uri)), name, a, b)
    table = Table("", "kind", "key", f"v{a}", f"v{b}")
    for r in rows:
        if r.differs or all_rows:
            table.add_row("[yellow]*[/]" if r.differs else "", r.kind, r.key, r.a, r.b)
    out.print(table)


@app.command()
def ui(
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Start MLflow's own UI on the registry (127.0.0.1 only unless --host says otherwise)."""
    settings = _settings(config, registry_uri)
    uri = settings.registry.uri
    if uri.startswith(("http://", "https://")):
        raise ShipmlError(f"the registry is a tracking server already: open {uri} in a browser")
    _registry(settings)  # creates the store and .shipml/ if this is the first command run
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    err.print(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - become MLflow's UI, so signals reach it directly


# -- serving -----------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    model: Annotated[
        str | None, typer.Option(help="registry reference (default: serve.model or <model.name>@production)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="interface (default: serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default: serve.port, 8000)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="worker processes (default: serve.workers)")
    ] = None,
) -> None:
    """Serve the registered version behind an alias over HTTP (shipml API, MLflow scoring, Open Inference v2)."""
    import tempfile

    import uvicorn

    from shipml.config import worker_environment
    from shipml.server.app import create_app

    flags = {
        "serve.model": model,
        "serve.host": host,
        "serve.port": port,
        "serve.workers": workers,
        "registry.uri": registry_uri,
    }
    overrides = {k: str(v) for k, v in flags.items() if v is not None}
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        section, field = key.split(".")
        nested.setdefault(section, {})[field] = value
    settings = load_settings(config, overrides=nested or None)
    app_or_factory: Any = create_app(settings)  # refuses a bad config before any port is bound
    n = settings.serve.workers
    if n > 1:
        metrics_dir = tempfile.mkdtemp(prefix="shipml-metrics-")
        overrides["serve.multiproc_dir"] = metrics_dir
        os.environ.update(worker_environment(config, overrides))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        app_or_factory = "shipml.server.app:app_from_environment"
    err.print(
        f"serving {settings.serve_ref()} on http://{settings.serve.host}:{settings.serve.port} with {n} worker(s)"
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it
    # found: make that one a no-op, so a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app_or_factory,
        factory=n > 1,
        host=settings.serve.host,
        port=settings.serve.port,
        workers=n,
        access_log=False,
        timeout_graceful_shutdown=int(settings.serve.grace_period_s) or None,
        log_level="warning",
    )
    if n > 1:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="who will hold the key (shown in logs)")],
    role: Annotated[list[str] | None, typer.Option(help="predict and/or admin (repeatable)")] = None,
) -> None:
    """Make an API key: the key for the client, its sha256 for shipml.yaml."""
    from shipml.server.auth import new_key

    roles = role or ["predict"]
    bad = [r for r in roles if r not in ("predict", "admin")]
    if bad:
        raise ConfigError([f"--role: must be predict or admin, got {bad[0]!r}"])
    key, digest = new_key()
    err.print("the key (give it to the client; it is not stored anywhere):")
    out.print(key, markup=False, highlight=False)
    err.print("add this under auth.keys in shipml.yaml:")
    err.print(f"  - {{name: {name}, sha256: {digest}, roles: [{', '.join(roles)}]}}", markup=False, highlight=False)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        rc = app(standalone_mode=False)
    except ShipmlError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/] {escape(line)}", highlight=False)
        sys.exit(exc.exit_code if not isinstance(exc, DataValidationError) else 2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
