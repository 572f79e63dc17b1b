"""Markdown as GitHub renders it, for the tests that check the documentation's links and the runbook's sections."""

from __future__ import annotations

import re


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
