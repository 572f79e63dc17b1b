"""Which slot column holds which feature of a schema: a pure function of the schema, computed here only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from shipml.adapters.store.tables import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
from shipml.core.schema import FeatureSchema

SlotKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureSlot:
    """One feature of one schema: its exact name, its schema kind, and its slot column (None: JSON only)."""

    position: int
    name: str
    kind: str
    slot: str | None

    @property
    def slot_kind(self) -> SlotKind:
        return "categorical" if self.kind == "categorical" else "numeric"


@dataclass(frozen=True)
class SchemaSlots:
    """The slot layout of one schema, as the writer binds it and readers decode it."""

    schema_sha256: str
    features: tuple[FeatureSlot, ...]

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The slot columns this schema uses, numeric first, in slot order."""
        return tuple(str(f.slot) for f in self._slotted())

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The feature held by each of ``columns``, in the same order."""
        return tuple(f.name for f in self._slotted())

    @cached_property
    def unslotted(self) -> tuple[str, ...]:
        """Features beyond the slot counts: in the JSON ``features`` column only."""
        return tuple(f.name for f in self.features if f.slot is None)

    def _slotted(self) -> list[FeatureSlot]:
        slotted = [f for f in self.features if f.slot is not None]
        return sorted(slotted, key=lambda f: (f.slot_kind != "numeric", int(str(f.slot)[1:])))


def slots_for(schema: FeatureSchema) -> SchemaSlots:
    """Numeric, integer and boolean features get n0, n1, ... in schema order; categoricals c0, c1, ...;
    those past the slot counts get none. Two names differing only in case are two features, two slots."""
    numeric = iter(NUMERIC_COLUMNS)
    categorical = iter(CATEGORICAL_COLUMNS)
    features = []
    for position, f in enumerate(schema.features):
        slot = next(numeric, None) if f.is_numeric else next(categorical, None)
        features.append(FeatureSlot(position, f.name, f.kind, slot))
    return SchemaSlots(schema.sha256(), tuple(features))
