"""The base of every section of the configuration: frozen, and an unknown key is an error (with a suggestion)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section of ``shipml.yaml``: its keys are its fields, nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)
