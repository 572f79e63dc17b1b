"""The local copy of registered versions: one verified directory per version, reused, the oldest pruned.

Every worker start, reload and `shipml predict` used to download a fresh copy that nobody deleted. Now a
version lives in ``<cache>/<model>/<version>-<manifest sha256 prefix>``: it is downloaded into a temporary
directory beside it, verified, then renamed into place (so a half-written copy is never seen), and checked
against the manifest again before each use (so a copy changed on disk is refused and fetched anew). Workers
of one server share the cache: a per-model ``flock`` makes one of them download while the others wait and
then reuse its copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from shipml.errors import ModelLoadError

log = structlog.get_logger("shipml.registry")

KEEP_VERSIONS = 3  # versions kept per model: the one loaded now and the most recently used before it
_INCOMING = ".incoming-"
_LOCK = ".lock"
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CachedVersion:
    """Which copy of which version: the manifest digest tells two registries' `churn/1` apart."""

    name: str
    version: str
    digest: str

    @property
    def dirname(self) -> str:
        return f"{_safe(self.version)}-{self.digest[:16]}"


def _safe(part: str) -> str:
    """A path component that cannot climb out of the cache (``..``) nor hide (``.x``)."""
    if _SAFE.match(part):
        return part
    return "x-" + hashlib.sha256(part.encode()).hexdigest()[:16]


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is masked by the umask and ignored for an existing directory
    return path


class ArtifactCache:
    """Verified local copies of registered versions under ``root`` (directories 0700)."""

    def __init__(self, root: Path, keep: int = KEEP_VERSIONS) -> None:
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        self.root = root
        self.keep = keep

    def path(self, key: CachedVersion) -> Path:
        return self.root / _safe(key.name) / key.dirname

    def ensure(
        self,
        key: CachedVersion,
        download: Callable[[Path], None],
        verify: Callable[[Path], None],
    ) -> Path:
        """The verified directory of ``key``: the cached copy if it still verifies, else a new download.

        ``download(into)`` fills an empty directory; ``verify(root)`` raises ModelLoadError on any
        difference from what was registered. A download that does not verify is refused (and not kept).
        """
        model_dir = _private_dir(_private_dir(self.root) / _safe(key.name))
        final = model_dir / key.dirname
        with _locked(model_dir / _LOCK):
            if final.is_dir():
                try:
                    verify(final)
                except ModelLoadError as exc:
                    # Changed on disk since it was verified: never use it, fetch it again.
                    log.warning("cache_copy_refused", model=key.name, version=key.version, reason=exc.message)
                    shutil.rmtree(final)
                else:
                    _touch(final)
                    self._prune(model_dir, final)
                    self._drop_legacy_copies(key.name)
                    return final
            incoming = Path(tempfile.mkdtemp(prefix=_INCOMING, dir=model_dir))  # 0700
            try:
                download(incoming)
                verify(incoming)
                incoming.rename(final)  # atomic; nobody else writes ``final`` while we hold the lock
            except BaseException:
                shutil.rmtree(incoming, ignore_errors=True)
                raise
            _touch(final)
            self._prune(model_dir, final)
            self._drop_legacy_copies(key.name)
        return final

    def _drop_legacy_copies(self, name: str) -> None:
        """Copies of ``name`` left by shipml before this cache: ``<name>-<version>-<mkdtemp suffix>``."""
        legacy = re.compile(rf"^{re.escape(name)}-\d+-[a-z0-9_]{{8}}$")
        for entry in self.root.iterdir():
            if legacy.match(entry.name) and (entry / "model").is_dir() and not (entry / _LOCK).exists():
                shutil.rmtree(entry, ignore_errors=True)

    def _prune(self, model_dir: Path, current: Path) -> None:
        """Keep the ``keep`` most recently used versions (``current`` always); drop stale downloads.

        Runs under the model's lock, so any ``.incoming-`` directory is one a killed process left.
        """
        versions = []
        for entry in model_dir.iterdir():
            if entry.name.startswith(_INCOMING):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and entry != current:
                versions.append(entry)
        versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in versions[self.keep - 1 :]:
            shutil.rmtree(old, ignore_errors=True)


def _touch(path: Path) -> None:
    os.utime(path)  # "recently used" for pruning


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
