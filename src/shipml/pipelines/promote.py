"""Alias moves: promote, rollback, and reading back what was where when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shipml.adapters.registry import AliasMove, MlflowRegistry
from shipml.errors import ConcurrentPromotion, RegistryError

PROMOTABLE = ("staging", "production")


@dataclass(frozen=True)
class Promoted:
    """What ``promote`` did: the alias moves, in order; none when ``alias`` pointed at ``version`` already
    (``already``: a repeated promotion is not an error, there is nothing to do)."""

    name: str
    version: str
    alias: str
    moves: tuple[AliasMove, ...]

    @property
    def already(self) -> bool:
        return not self.moves

    def summary(self) -> str:
        """One line for a promotion that moved nothing (the moves speak for themselves otherwise)."""
        return f"{self.name}/{self.version} already has alias {self.alias!r}; nothing to do"


def promote(registry: MlflowRegistry, name: str, version: str, to: str, reason: str) -> Promoted:
    """Point ``to`` at ``version``; promoting to production keeps the one it replaced as `previous`.

    The writes are ordered so that `previous` never equals `production`, even if the command dies between
    two of them: production moves first, then `previous` takes the version that move replaced (read right
    before it). A concurrent promotion is detected afterwards and `previous` settled from the history.
    """
    if to not in PROMOTABLE:
        raise RegistryError(f"--to: must be one of {', '.join(PROMOTABLE)}, got {to!r}")
    registry.get_version(name, version)  # unknown name or version: refused before any change
    current = registry.aliases(name)
    if current.get(to) == version:
        return Promoted(name, version, to, ())
    if to != "production":
        return Promoted(name, version, to, (registry.move_alias(name, to, version, reason),))
    started = _now_ms()
    moves = []
    if current.get("previous") == version:  # it is about to be production: never both at once
        moves.append(registry.move_alias(name, "previous", None, f"v{version} goes to production: {reason}"))
    moved = registry.move_alias(name, "production", version, reason)
    moves.append(moved)
    if moved.from_version is not None and moved.from_version != version:
        moves.append(registry.move_alias(name, "previous", moved.from_version, f"replaced by v{version}: {reason}"))
    moves.extend(_settle(registry, name, moved, started))
    return Promoted(name, version, to, tuple(moves))


def rollback(registry: MlflowRegistry, name: str, reason: str) -> list[AliasMove]:
    """Swap `production` and `previous`.

    A swap in two writes would leave both aliases on one version in between; `previous` is cleared first,
    so that a failure part-way leaves production on either version and `previous` on no version.
    """
    registry.require_model(name)
    current = registry.aliases(name)
    prod, prev = current.get("production"), current.get("previous")
    if prev is None or prod is None:
        raise RegistryError(f"model {name!r} has no `previous` production version to roll back to")
    started = _now_ms()
    moves = [registry.move_alias(name, "previous", None, f"rollback: {reason}")]
    moved = registry.move_alias(name, "production", prev, f"rollback: {reason}")
    moves.append(moved)
    if moved.from_version is not None and moved.from_version != prev:
        moves.append(registry.move_alias(name, "previous", moved.from_version, f"rollback: {reason}"))
    moves.extend(_settle(registry, name, moved, started))
    return moves


def _settle(registry: MlflowRegistry, name: str, moved: AliasMove, started: datetime) -> list[AliasMove]:
    """After our writes: repair `previous` if a concurrent move left it wrong, and report being superseded.

    MLflow has no compare-and-set on aliases, so two promotions at once both land and the last wins, and
    each writes `previous` from what it read. When another production move happened since ``started``,
    `previous` is settled from the history (every move kept, in time order): the latest other version that
    held production, so that every promoter converges on the same value. Without one, nothing is touched
    (an alias set outside shipml is in no history, and `previous` as written is right).
    """
    now = registry.aliases(name)
    production, previous = now.get("production"), now.get("previous")
    moves = [m for m in registry.history(name) if m.alias == "production"]
    raced = production != moved.to_version or any(
        m != moved and datetime.fromisoformat(m.time) >= started for m in moves
    )
    repairs = []
    held = [m.to_version for m in moves if m.to_version]
    # production is the last move recorded, or the one before it: two processes' moves can be recorded (each
    # stamped after its write returned) in the other order than they were written
    if raced and production in held[-2:]:
        want = next((v for v in reversed(held) if v != production), None)
        if want != previous and (want is not None or previous == production):
            repairs.append(registry.move_alias(name, "previous", want, "repaired after a concurrent promotion"))
    if production != moved.to_version:
        raise ConcurrentPromotion(
            f"{name}@production: moved to {production or 'no version'} by a concurrent change while this command "
            f"moved it to {moved.to_version}; both moves are in `shipml models history {name}`"
        )
    return repairs


def _now_ms() -> datetime:
    """Now, at the millisecond precision of the times in the history."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


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
