"""Promotion's outcome: what moved, or that nothing had to (a typed answer, never an error to parse)."""

from __future__ import annotations

from typing import Any

import pytest

from shipml.errors import RegistryError
from shipml.pipelines.promote import promote
from tests.support.registry import AliasRegistry


def registry() -> Any:
    return AliasRegistry({"churn": 3}, {"churn": {"production": "1"}})


def test_promoting_to_production_moves_it_and_keeps_the_replaced_version_as_previous() -> None:
    reg = registry()
    done = promote(reg, "churn", "2", "production", "better")
    assert not done.already and (done.name, done.version, done.alias) == ("churn", "2", "production")
    assert [(m.alias, m.from_version, m.to_version) for m in done.moves] == [
        ("production", "1", "2"),
        ("previous", None, "1"),
    ]
    assert reg.aliases("churn") == {"production": "2", "previous": "1"}


def test_promoting_what_already_has_the_alias_is_an_outcome_that_moved_nothing() -> None:
    reg = registry()
    done = promote(reg, "churn", "1", "production", "again")
    assert done.already and done.moves == ()
    assert done.summary() == "churn/1 already has alias 'production'; nothing to do"
    assert reg.history("churn") == [] and reg.aliases("churn") == {"production": "1"}


def test_an_unknown_version_is_still_refused_before_any_change() -> None:
    reg = registry()
    with pytest.raises(RegistryError, match="no version 9"):
        promote(reg, "churn", "9", "production", "x")
    assert reg.history("churn") == []
