"""Stand-ins for the registry: ``FakeRegistry`` where a test needs its ``load`` and nothing else, ``AliasRegistry``
where it moves aliases (promotion, the canary)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from shipml.adapters.registry import AliasMove, LoadedModel, ModelRef, VersionInfo
from shipml.errors import RegistryError
from tests.support.fitted import forest


class FakeRegistry:
    """The registry's ``load``: a version's files in a directory, as after the integrity check; its pipeline is
    the small forest of tests.support.fitted (fitted when first loaded)."""

    def __init__(self, local_dir: Path, tags: dict[str, str]) -> None:
        self.local_dir = local_dir
        self.tags = tags

    def load(self, ref: ModelRef, cache_dir: Path) -> LoadedModel:
        info = VersionInfo("churn", "3", "run", datetime(2026, 1, 1, tzinfo=UTC), (), self.tags)
        return LoadedModel(info, self.local_dir, lambda: forest()[0])


class AliasRegistry:
    """The registry's versions and aliases in memory, for promotion and the canary: versions ``1..n`` of each model,
    aliases as a dict, every move kept (like the real history tags)."""

    def __init__(self, versions: dict[str, int], aliases: dict[str, dict[str, str]] | None = None) -> None:
        self.versions = versions
        self._aliases = {name: dict((aliases or {}).get(name, {})) for name in versions}
        self.moves: list[tuple[str, AliasMove]] = []

    def require_model(self, name: str) -> None:
        if name not in self.versions:
            raise RegistryError(f"unknown model {name!r}")

    def get_version(self, name: str, version: str) -> VersionInfo:
        self.require_model(name)
        if not version.isdigit() or not 1 <= int(version) <= self.versions[name]:
            raise RegistryError(f"model {name!r} has no version {version}")
        held = tuple(a for a, v in self._aliases[name].items() if v == version)
        return VersionInfo(name, version, "run", datetime(2026, 1, 1, tzinfo=UTC), held, {})

    def resolve(self, ref: ModelRef) -> VersionInfo:
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        self.require_model(ref.name)
        alias = ref.alias or "production"
        if alias not in self._aliases[ref.name]:
            raise RegistryError(f"model {ref.name!r} has no version with alias {alias!r}")
        return self.get_version(ref.name, self._aliases[ref.name][alias])

    def aliases(self, name: str) -> dict[str, str]:
        self.require_model(name)
        return dict(self._aliases[name])

    def move_alias(self, name: str, alias: str, version: str | None, reason: str) -> AliasMove:
        before = self._aliases[name].get(alias)
        if version is None:
            self._aliases[name].pop(alias, None)
        else:
            self._aliases[name][alias] = version
        move = AliasMove(datetime.now(UTC).isoformat(timespec="milliseconds"), "test", alias, before, version, reason)
        self.moves.append((name, move))
        return move

    def history(self, name: str) -> list[AliasMove]:
        return [m for n, m in self.moves if n == name]
