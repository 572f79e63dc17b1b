"""Command help reads at any terminal width: the docstring's own line breaks do not survive into the paragraphs."""

from __future__ import annotations

from types import SimpleNamespace

from shipml.cli.app import _unwrap_help


def test_a_paragraph_is_one_line_for_the_terminal_to_wrap_and_lists_keep_their_lines() -> None:
    leaf = SimpleNamespace(
        help="First line.\n\nA paragraph wrapped\nat the source's width.\n\n- one\n- two", commands={}
    )
    group = SimpleNamespace(help="Group\nhelp.", commands={"leaf": leaf})
    _unwrap_help(group)
    assert group.help == "Group help."
    assert leaf.help == "First line.\n\nA paragraph wrapped at the source's width.\n\n- one\n- two"
