"""Alias moves: promote, rollback, and reading back what was where when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shipml.adapters.mlflow_registry import AliasMove, MlflowRegistry
from shipml.errors import RegistryError

PROMOTABLE = ("staging", "production")


def promote(registry: MlflowRegistry, name: str, version: str, to: str, reason: str) -> list[AliasMove]:
    """Point ``to`` at ``version``; promoting to production keeps the old one as `previous`."""
    if to not in PROMOTABLE:
        raise RegistryError(f"--to: must be one of {', '.join(PROMOTABLE)}, got {to!r}")
    registry.get_version(name, version)  # unknown name or version: refused before any change
    current = registry.aliases(name)
    if current.get(to) == version:
        raise RegistryError(f"{name}/{version} already has alias {to!r}; nothing to do")
    moves = []
    if to == "production" and current.get("production") is not None:
        moves.append(registry.move_alias(name, "previous", current["production"], f"replaced by v{version}: {reason}"))
    moves.append(registry.move_alias(name, to, version, reason))
    return moves


def rollback(registry: MlflowRegistry, name: str, reason: str) -> list[AliasMove]:
    """Swap `production` and `previous`."""
    registry.require_model(name)
    current = registry.aliases(name)
    prod, prev = current.get("production"), current.get("previous")
    if prev is None or prod is None:
        raise RegistryError(f"model {name!r} has no `previous` production version to roll back to")
    return [
        registry.move_alias(name, "production", prev, f"rollback: {reason}"),
        registry.move_alias(name, "previous", prod, f"rollback: {reason}"),
    ]


def holder_at(moves: list[AliasMove], alias: str, when: datetime) -> str | None:
    """The version that held ``alias`` at ``when`` according to the history (None if none did)."""
    holder = None
    for move in moves:
        if move.alias != alias:
            continue
        if datetime.fromisoformat(move.time) > when:
            break
        holder = move.to_version
    return holder


@dataclass(frozen=True)
class ComparisonRow:
    kind: str  # "metric" or "param"
    key: str
    a: str
    b: str

    @property
    def differs(self) -> bool:
        return self.a != self.b


def compare(registry: MlflowRegistry, name: str, a: str, b: str) -> list[ComparisonRow]:
    """Metrics then params of two versions, side by side."""
    va, vb = registry.get_version(name, a), registry.get_version(name, b)
    rows = []
    for key in sorted(set(va.metrics) | set(vb.metrics)):
        rows.append(ComparisonRow("metric", key, _num(va.metrics.get(key)), _num(vb.metrics.get(key))))
    for key in sorted(set(va.params) | set(vb.params)):
        rows.append(ComparisonRow("param", key, va.params.get(key, "-"), vb.params.get(key, "-")))
    return rows


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"
