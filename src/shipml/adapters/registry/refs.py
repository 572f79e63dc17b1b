"""The values the registry hands out: references, versions, alias moves, what a run logs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shipml.errors import RegistryError

ALIASES = ("staging", "production", "previous")
_REF = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)(?:(?:@(?P<alias>[A-Za-z0-9_-]+))|(?:[/:](?P<version>\d+)))?$"
)


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, by number or by alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``churn@production``, ``churn/3``, ``churn:3``, ``models:/churn@staging``; never a path or URL."""
        m = _REF.match(text.strip())
        if m is None:
            raise RegistryError(f"model reference {text!r}: expected NAME@ALIAS or NAME/VERSION, e.g. churn@production")
        return cls(m["name"], m["version"], m["alias"])

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    """What the registry knows of one model version."""

    name: str
    version: str
    run_id: str
    created_at: datetime
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: who moved it from which version to which, when and why."""

    time: str
    user: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str


@dataclass(frozen=True)
class RunPayload:
    """Everything one training run logs, prepared by the train pipeline."""

    name: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    files: dict[str, str]  # artifact path -> text content
    model: Any  # the fitted sklearn Pipeline
    input_example: Any  # a small DataFrame of features
    pip_requirements: tuple[str, ...] = ()
    model_files: dict[str, bytes] = field(default_factory=dict)  # saved next to the model, under the manifest
