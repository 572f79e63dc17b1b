"""Reliability catalogue, model artifacts (cases 26-32): tampered files in the embedded registry's artifact
store, pickles that must never run, traversal and SSRF strings as model references, private caches.

The tests change files where the registry keeps them (``.shipml/artifacts``) and move the alias, as an
attacker with write access to the artifact store would; they rely on no shipml internals for that.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.reliability.conftest import GOOD_ROW, bearer, metric
from tests.support.cli import one_error_line, shipml
from tests.support.project import CONFIG, train_project
from tests.support.server import Keys, Server, make_keys, start_server

pytestmark = pytest.mark.integration

SMALL = CONFIG.replace("n_estimators: 100", "n_estimators: 10").replace("cv_folds: 5", "cv_folds: 2")
FAILURES = "shipml_model_load_failures_total"


@dataclass(frozen=True)
class Store:
    root: Path
    keys: Keys
    server: Server


def _registry(root: Path):  # type: ignore[no-untyped-def]
    from shipml.adapters.registry import MlflowRegistry
    from shipml.config import RegistrySettings

    return MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """churn/1 in production (served), churn/2 registered and healthy; reloads only when asked."""
    root = tmp_path_factory.mktemp("artifacts")
    train_project(root, rows=1_500)
    keys, auth = make_keys()
    (root / "shipml.yaml").write_text(SMALL + auth + "serve:\n  reload_interval_s: 0\n")
    trained = shipml(root, "train")
    assert trained.returncode in (0, 1), trained.stdout + trained.stderr
    assert [str(v.version) for v in _registry(root).versions("churn")] == ["1", "2"]
    server = start_server(root, env={"SHIPML_NATIVE__CACHE_DIR": str(root / "kernels" / "native")})
    yield Store(root, keys, server)
    assert server.stop() == 0


def files_of(root: Path, version: str) -> dict[str, Path]:
    """The registered files of churn/``version`` in the artifact store, by path relative to the run."""
    run_id = _registry(root).get_version("churn", version).run_id
    base = next(p for p in (root / ".shipml" / "artifacts").rglob(run_id) if p.is_dir()) / "artifacts"
    return {p.relative_to(base).as_posix(): p for p in base.rglob("*") if p.is_file()}


@contextmanager
def tampered(root: Path, version: str, change: Callable[[dict[str, Path]], None]) -> Iterator[dict[str, Path]]:
    """The artifact files of ``version`` changed by ``change`` for the block, then put back exactly."""
    files = files_of(root, version)
    base = next(iter(files.values())).parents[len(next(iter(files)).split("/")) - 1]
    backup = base.parent / "artifacts.orig"
    shutil.copytree(base, backup, symlinks=True)
    try:
        change(files)
        yield files
    finally:
        shutil.rmtree(base)
        backup.rename(base)


def reload_to(store: Store, version: str) -> requests.Response:
    """Move churn@production to ``version`` and ask the server to load it."""
    _registry(store.root).move_alias("churn", "production", version, "reliability test")
    return requests.post(f"{store.server.url}/admin/reload", headers=bearer(store.keys.admin), timeout=120)


@pytest.fixture
def back_to_1(store: Store) -> Iterator[None]:
    yield
    r = reload_to(store, "1")
    assert r.status_code == 200, r.text


def serves(store: Store, version: str) -> None:
    r = requests.post(
        f"{store.server.url}/predict", json={"features": GOOD_ROW}, headers=bearer(store.keys.predict), timeout=10
    )
    assert r.status_code == 200 and r.json()["model"]["version"] == version, r.text
    model = requests.get(f"{store.server.url}/model", headers=bearer(store.keys.predict), timeout=10).json()
    assert model["version"] == version


def flip_byte(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# -- 26 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["model/model.skops", "model/shipml_fast.npz", "model/MLmodel", "shipml/schema.json"]
)
def test_case_26_one_flipped_byte_refuses_the_load_and_the_old_model_keeps_serving(
    store: Store, back_to_1: None, target: str
) -> None:
    before = metric(store.server, FAILURES)
    with tampered(
        store.root, "2", lambda files: flip_byte(files[target], -2 if target.endswith((".json", "MLmodel")) else -100)
    ):
        r = reload_to(store, "2")
        assert r.status_code == 502, r.text
        body = r.json()
        assert (body["version"], body["error"]["code"]) == ("1", "load_failed")
        assert "sha256 mismatch" in body["error"]["message"] and target in body["error"]["message"]
        assert "Traceback" not in r.text
        serves(store, "1")
        assert metric(store.server, FAILURES) == before + 1


def test_case_26_a_hash_refusal_is_counted_with_reason_hash(store: Store, back_to_1: None) -> None:
    before = metric(store.server, FAILURES, reason="hash")
    with tampered(store.root, "2", lambda files: flip_byte(files["model/model.skops"])):
        assert reload_to(store, "2").status_code == 502
    assert metric(store.server, FAILURES, reason="hash") == before + 1


# -- 27, 28 -----------------------------------------------------------------------------------------


class Marker:
    """Unpickling this creates a directory: the proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def _mlmodel_pointing_at(files: dict[str, Path], name: str, fmt: str) -> None:
    mlmodel = files["model/MLmodel"]
    text = mlmodel.read_text().replace("pickled_model: model.skops", f"pickled_model: {name}")
    mlmodel.write_text(text.replace("serialization_format: skops", f"serialization_format: {fmt}"))


def _evil_payloads(marker: Path) -> dict[str, Callable[[dict[str, Path]], None]]:
    raw = pickle.dumps(Marker(marker))

    def as_skops(files: dict[str, Path]) -> None:
        files["model/model.skops"].write_bytes(raw)

    def as_pickle_format(files: dict[str, Path]) -> None:
        (files["model/model.skops"].parent / "model.pkl").write_bytes(raw)
        _mlmodel_pointing_at(files, "model.pkl", "cloudpickle")

    def as_pkl_gz(files: dict[str, Path]) -> None:
        (files["model/model.skops"].parent / "model.pkl.gz").write_bytes(gzip.compress(raw))
        _mlmodel_pointing_at(files, "model.pkl.gz", "skops")

    def joblib_as_onnx(files: dict[str, Path]) -> None:
        import joblib  # type: ignore[import-untyped]

        target = files["model/model.skops"].parent / "model.onnx"
        joblib.dump(Marker(marker), target)
        _mlmodel_pointing_at(files, "model.onnx", "skops")

    def fast_predictor_as_pickle(files: dict[str, Path]) -> None:
        files["model/shipml_fast.npz"].write_bytes(raw)

    return {"skops-named pickle": as_skops, "pickle format": as_pickle_format, ".pkl.gz": as_pkl_gz,
            "joblib renamed .onnx": joblib_as_onnx, "pickle as the packed predictor": fast_predictor_as_pickle}  # fmt: skip


@pytest.mark.parametrize("disguise", ["skops-named pickle", "pickle format", "pickle as the packed predictor"])
def test_case_27_a_pickle_in_the_artifact_store_never_runs(
    store: Store, back_to_1: None, tmp_path: Path, disguise: str
) -> None:
    marker = tmp_path / "pickle-ran"
    with tampered(store.root, "2", _evil_payloads(marker)[disguise]):
        r = reload_to(store, "2")
        assert r.status_code == 502, r.text
        serves(store, "1")
        # `shipml predict` and `shipml validate` load through the same gate
        data = store.root / ".shipml" / "data" / "churn.csv"
        scored = shipml(store.root, "predict", str(data), "--model", "churn/2", "-o", str(tmp_path / "out.csv"))
        assert scored.returncode == 2, scored.stdout + scored.stderr
    assert not marker.exists(), f"{disguise}: the pickle ran"


@pytest.mark.parametrize("disguise", [".pkl.gz", "joblib renamed .onnx"])
def test_case_28_a_pickle_disguised_by_name_is_refused_like_pickle(
    store: Store, back_to_1: None, tmp_path: Path, disguise: str
) -> None:
    marker = tmp_path / "pickle-ran"
    with tampered(store.root, "2", _evil_payloads(marker)[disguise]):
        r = reload_to(store, "2")
        assert r.status_code == 502, r.text
        serves(store, "1")
    assert not marker.exists(), f"{disguise}: the pickle ran"


# -- 29, 30 -----------------------------------------------------------------------------------------

TRAVERSAL = ["../../etc/passwd", "..\\..\\windows", "%2e%2e%2fetc", "%252e%252e%252f", "file:///etc/", "churn#/../x",
             "churn@production#/../../x", "churn/1?x=../", "/etc/passwd", "churn/../../1", "churn@../../x"]  # fmt: skip


@contextmanager
def listener() -> Iterator[tuple[int, Callable[[], int]]]:
    """A TCP port that counts the connections made to it (none may be)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)

    def connections() -> int:
        n = 0
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    try:
        yield sock.getsockname()[1], connections
    finally:
        sock.close()


def test_case_29_traversal_in_a_model_reference_is_refused_before_any_file_access(tmp_path: Path) -> None:
    # an empty project (auth off so that the reference is what gets refused): any registry access would
    # create .shipml/ for the embedded registry, or connect to the registry URI
    (tmp_path / "shipml.yaml").write_text("auth: {enabled: false}\n")
    with listener() as (port, connections):
        for i, ref in enumerate(TRAVERSAL):
            line = one_error_line(shipml(tmp_path, "serve", "--model", ref))
            assert "model reference" in line, (ref, line)
            if i % 4 == 0:
                remote = shipml(tmp_path, "serve", "--model", ref, "--registry-uri", f"http://127.0.0.1:{port}")
                assert "model reference" in one_error_line(remote), ref
            assert not (tmp_path / ".shipml").exists(), ref
        assert connections() == 0
    (tmp_path / "shipml.yaml").write_text("serve:\n  model: ../../etc/passwd\nauth: {enabled: false}\n")
    assert "model reference" in one_error_line(shipml(tmp_path, "serve"))
    assert not (tmp_path / ".shipml").exists()


def test_case_29_show_validate_and_predict_refuse_a_traversal_reference_before_touching_the_registry(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    for args in (("models", "show", "../../etc/passwd"), ("validate", str(data), "--model", "../../etc/passwd"),
                 ("predict", str(data), "--model", "../../etc/passwd", "-o", str(tmp_path / "o.csv"))):  # fmt: skip
        assert "model reference" in one_error_line(shipml(tmp_path, *args))
        assert not (tmp_path / ".shipml").exists(), args


def test_case_30_ssrf_uris_are_never_a_model_reference_and_no_http_route_takes_one(store: Store) -> None:
    with listener() as (port, connections):
        for uri in (f"http://127.0.0.1:{port}/model", "http://169.254.169.254/latest/meta-data/",
                    f"gopher://127.0.0.1:{port}/_x", f"models:/http://127.0.0.1:{port}", f"//127.0.0.1:{port}/m"):  # fmt: skip
            assert "model reference" in one_error_line(shipml(store.root, "serve", "--model", uri)), uri
        # the only admin route that loads a model takes no reference from the request
        target = f"http://127.0.0.1:{port}/churn"
        r = requests.post(
            f"{store.server.url}/admin/reload?force=true&model={target}&uri={target}",
            json={"model": target, "uri": target, "source": target},
            headers=bearer(store.keys.admin),
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["version"] == "1", r.text
        r = requests.post(
            f"{store.server.url}/admin/reload", json={"uri": target}, headers=bearer(store.keys.predict), timeout=10
        )
        assert r.status_code == 403
        assert connections() == 0
    serves(store, "1")


# -- 31 ---------------------------------------------------------------------------------------------


def test_case_31_links_out_of_the_artifact_tree_are_refused_and_nothing_is_written_outside(
    store: Store, back_to_1: None, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not a model file")

    def link_out(files: dict[str, Path]) -> None:
        model_dir = files["model/model.skops"].parent
        (model_dir / "escape").symlink_to(outside, target_is_directory=True)
        (model_dir / "passwd").symlink_to("/etc/passwd")

    with tampered(store.root, "2", link_out):
        r = reload_to(store, "2")
        assert r.status_code == 502, r.text
        serves(store, "1")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "not a model file"


# -- 32 ---------------------------------------------------------------------------------------------


def test_case_32_cache_directories_are_0700_and_the_cache_is_verified_before_each_load(store: Store) -> None:
    cache = store.root / ".shipml" / "cache"
    # the directories shipml creates (the cache, each model's, each version's copy) are 0700, so nothing
    # below them (the registry client's own subdirectories) can be read or changed by another user
    created = [cache, *cache.iterdir(), *(v for m in cache.iterdir() if m.is_dir() for v in m.iterdir())]
    created = [d for d in created if d.is_dir()]
    assert len(created) >= 3, created
    for d in created:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, (d, oct(d.stat().st_mode))
    for p in cache.rglob("*"):
        ancestors = [cache / q for q in p.relative_to(cache).parents]
        assert any(stat.S_IMODE(a.stat().st_mode) == 0o700 for a in ancestors), p
    kernels = store.root / "kernels" / "native"
    if kernels.exists():
        assert stat.S_IMODE(kernels.stat().st_mode) == 0o700
    # a cached copy changed on disk is never loaded: it is checked, refused and fetched again
    [cached] = [p for p in cache.rglob("model.skops") if "incoming" not in str(p)]
    registered = files_of(store.root, "1")["model/model.skops"].read_bytes()
    flip_byte(cached)
    r = requests.post(f"{store.server.url}/admin/reload?force=true", headers=bearer(store.keys.admin), timeout=120)
    assert r.status_code == 200 and r.json()["version"] == "1", r.text
    [cached] = [p for p in cache.rglob("model.skops") if "incoming" not in str(p)]
    assert cached.read_bytes() == registered
    serves(store, "1")
