"""The artifact cache: one verified directory per version, reused, re-verified, pruned, private."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from shipml.adapters.registry.cache import ArtifactCache, CachedVersion
from shipml.errors import ModelLoadError

CONTENT = b"the registered model bytes"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


class FakeStore:
    """Downloads ``model/model.skops``; verify compares it with the registered sha256."""

    def __init__(self, content: bytes = CONTENT) -> None:
        self.content = content
        self.downloads = 0
        self._lock = threading.Lock()

    def download(self, into: Path) -> None:
        with self._lock:
            self.downloads += 1
        (into / "model").mkdir()
        (into / "model" / "model.skops").write_bytes(self.content)

    @staticmethod
    def verify(root: Path) -> None:
        got = hashlib.sha256((root / "model" / "model.skops").read_bytes()).hexdigest()
        if got != DIGEST:
            raise ModelLoadError(f"model/model.skops sha256 mismatch: registered {DIGEST}, got {got}")


def key(version: str = "1", name: str = "churn") -> CachedVersion:
    return CachedVersion(name, version, DIGEST)


def versions_on_disk(cache: ArtifactCache, name: str = "churn") -> list[str]:
    return sorted(p.name for p in (cache.root / name).iterdir() if p.is_dir())


def test_repeated_loads_of_one_version_reuse_one_directory(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    paths = {cache.ensure(key(), store.download, store.verify) for _ in range(5)}
    assert len(paths) == 1
    assert store.downloads == 1
    assert versions_on_disk(cache) == [f"1-{DIGEST[:16]}"]


def test_a_byte_flipped_in_the_cache_is_detected_and_fetched_again(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    cached = cache.ensure(key(), store.download, store.verify) / "model" / "model.skops"
    data = bytearray(cached.read_bytes())
    data[3] ^= 0x01
    cached.write_bytes(bytes(data))
    again = cache.ensure(key(), store.download, store.verify)
    assert store.downloads == 2
    assert (again / "model" / "model.skops").read_bytes() == CONTENT
    assert versions_on_disk(cache) == [f"1-{DIGEST[:16]}"]


def test_a_download_that_does_not_verify_is_refused_and_not_kept(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore(b"tampered in the artifact store")
    with pytest.raises(ModelLoadError, match=r"model/model\.skops sha256 mismatch"):
        cache.ensure(key(), store.download, store.verify)
    assert list((cache.root / "churn").iterdir()) == [cache.root / "churn" / ".lock"]


def test_old_versions_are_pruned_keeping_the_most_recently_used(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache", keep=2), FakeStore()
    for version in ("1", "2", "3"):
        cache.ensure(key(version), store.download, store.verify)
    assert versions_on_disk(cache) == [f"2-{DIGEST[:16]}", f"3-{DIGEST[:16]}"]
    cache.ensure(key("2"), store.download, store.verify)  # used again: now the most recent
    cache.ensure(key("4"), store.download, store.verify)
    assert versions_on_disk(cache) == [f"2-{DIGEST[:16]}", f"4-{DIGEST[:16]}"]


def test_a_download_left_by_a_killed_process_is_removed(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    (tmp_path / "cache" / "churn" / ".incoming-dead").mkdir(parents=True)
    cache.ensure(key(), store.download, store.verify)
    assert not (tmp_path / "cache" / "churn" / ".incoming-dead").exists()


def test_cache_directories_are_private(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    path = cache.ensure(key(), store.download, store.verify)
    for directory in (cache.root, cache.root / "churn", path):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_a_model_name_cannot_climb_out_of_the_cache(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    path = cache.ensure(key(name=".."), store.download, store.verify)
    assert path.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert path.parent.parent == cache.root


def test_concurrent_loads_of_one_version_download_it_once(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(cache.ensure(key(), store.download, store.verify)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 4 and len(set(paths)) == 1
    assert store.downloads == 1


def test_copies_left_by_the_old_per_load_downloads_are_removed(tmp_path: Path) -> None:
    cache, store = ArtifactCache(tmp_path / "cache"), FakeStore()
    for leftover in ("churn-1-k2j4_x9a", "churn-7-0abcdefg"):
        (tmp_path / "cache" / leftover / "model").mkdir(parents=True)
    (tmp_path / "cache" / "churner-1-k2j4_x9a" / "model").mkdir(parents=True)  # another model's: kept
    cache.ensure(key(), store.download, store.verify)
    assert sorted(p.name for p in cache.root.iterdir()) == ["churn", "churner-1-k2j4_x9a"]
