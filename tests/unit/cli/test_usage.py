"""A typo is not a crash: every usage mistake prints the usage line and one error line, and exits 2."""

from __future__ import annotations

import pytest

from shipml.cli import main


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``shipml ARGS`` through the entry point, in this process: exit code, stdout, stderr."""
    monkeypatch.setattr("sys.argv", ["shipml", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 1, captured.out, captured.err


MISTAKES = [
    # unknown commands, at the top and in every group
    (("no-such-command",), "Usage: shipml [OPTIONS] COMMAND [ARGS]...", "No such command 'no-such-command'"),
    (("trian",), "Usage: shipml [OPTIONS] COMMAND", "No such command 'trian'"),
    (("models", "lst"), "Usage: shipml models [OPTIONS] COMMAND", "No such command 'lst'"),
    (("schema", "nope"), "Usage: shipml schema", "No such command 'nope'"),
    (("example", "iris", "x.csv"), "Usage: shipml example", "No such command 'iris'"),
    (("keys", "old"), "Usage: shipml keys", "No such command 'old'"),
    (("monitor", "drfit"), "Usage: shipml monitor", "No such command 'drfit'"),
    (("ab", "reprot"), "Usage: shipml ab", "No such command 'reprot'"),
    (("deploy", "status-all"), "Usage: shipml deploy", "No such command 'status-all'"),
    # unknown options
    (("train", "--no-such-option"), "Usage: shipml train [OPTIONS]", "No such option: --no-such-option"),
    (("models", "list", "--al"), "Usage: shipml models list [OPTIONS]", "No such option: --al"),
    (("ab", "report", "--windw", "1h"), "Usage: shipml ab report [OPTIONS]", "No such option: --windw"),
    (("deploy", "canary", "churn", "2", "--step", "1,100"), "Usage: shipml deploy canary", "No such option: --step"),
    # missing arguments and options
    (("models", "show"), "Usage: shipml models show [OPTIONS]", "Missing argument 'ref'"),
    (("validate",), "Usage: shipml validate [OPTIONS]", "Missing argument 'data'"),
    (("deploy", "canary", "churn"), "Usage: shipml deploy canary", "Missing argument 'version'"),
    (("predict", "new.csv", "-o", "out.csv"), "Usage: shipml predict", "Missing option '--model'"),
    (("keys", "new"), "Usage: shipml keys new", "Missing option '--name'"),
    (("train", "--config"), "Usage: shipml train", "Option '--config' requires an argument"),
    # malformed arguments: extra ones, and bad values of typed options
    (("models", "list", "churn"), "Usage: shipml models list", "unexpected extra argument(s) (churn)"),
    (("example", "churn", "x.csv", "--rows", "many"), "Usage: shipml example churn", "'--rows'"),
    (("example", "churn", "x.csv", "--rows", "5"), "Usage: shipml example churn", "'--rows'"),
    (("serve", "--port", "70000"), "Usage: shipml serve", "'--port'"),
    (("models", "history", "churn", "--at", "yesterday"), "Usage: shipml models history", "'--at'"),
    (("models", "compare", "churn", "1", "2", "--all=maybe"), "Usage: shipml models compare", "--all"),
]


@pytest.mark.parametrize(("args", "usage", "error"), MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_usage_mistake_is_the_usage_line_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
    args: tuple[str, ...],
    usage: str,
    error: str,
) -> None:
    monkeypatch.chdir(str(tmp_path))
    code, stdout, stderr = run(capsys, monkeypatch, *args)
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith(usage), lines
    assert lines[1].startswith("error: "), lines
    assert error.lower() in lines[1].lower(), lines
    command = usage.removeprefix("Usage: ").split(" [")[0]
    assert f"{command} --help" in lines[1], lines  # where to look next


def test_a_group_without_its_command_shows_the_groups_help_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, stdout, stderr = run(capsys, monkeypatch, "models")
    assert code == 2
    assert "Traceback" not in stdout + stderr
    assert "Usage: shipml models" in stdout + stderr
    for command in ("list", "show", "promote", "rollback", "compare", "history"):
        assert command in stdout + stderr


def test_help_is_not_a_mistake(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = run(capsys, monkeypatch, "train", "--help")
    assert code == 0
    assert "Usage: shipml train" in stdout
    assert "Traceback" not in stdout + stderr
