"""Lineage facts recorded with a run: the git commit, who ran it, tags as MLflow wants them."""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Mapping
from pathlib import Path


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the git repository around ``cwd``, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def tags_from(mapping: Mapping[str, object]) -> dict[str, str]:
    """MLflow tags and params are strings."""
    return {k: str(v) for k, v in mapping.items()}
