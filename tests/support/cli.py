"""Run the `shipml` command as a user would, in a given directory: a real process each time, forked from a warm
interpreter (tests/support/launcher.py) unless asked ``fresh``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.support.launcher import SHIPML, start


def shipml(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """`shipml ARGS` in ``cwd``, its output captured, as ``subprocess.run`` returns it (and raises
    ``subprocess.TimeoutExpired`` past ``timeout``, the process killed). ``fresh``: the installed script in a new
    interpreter."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")}
    full_env.update({"COLUMNS": "200", "NO_COLOR": "1"}, **(env or {}))
    with tempfile.TemporaryDirectory(prefix="shipml-cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        process = start(args, cwd, full_env, out, err, fresh=fresh)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess([SHIPML, *args], code, out.read_text(), err.read_text())


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line a user mistake must produce (and no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]
