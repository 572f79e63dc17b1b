"""The host writer (one process committing every worker's rows on SQLite): group commit, each worker's own
outcome, and a writer that dies costs no row."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipml.adapters.store import HostLink, HostWriterProcess, PredictionStore
from shipml.adapters.store.host_link import HEADER, RETRY_AFTER_S, HostWriteFailed, encode, read_exactly
from shipml.adapters.store.host_writer import HostWriter, listen
from shipml.core.prediction import Prediction
from tests.support.logged import logged


def rows(n: int, prefix: str) -> list[Prediction]:
    return [
        logged(f"{prefix}-{i}", float(i), "churn", "1", "main", {"tenure": float(i)}, {"predicted_class": "1"}, 0.5)
        for i in range(n)
    ]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory for the socket (a Unix socket's path is at most 107 bytes: pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="shipml-w-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    yield s
    s.close()


def pieces_of(store: PredictionStore, unit: list[Prediction]) -> list[tuple[str, object]]:
    """The INSERTs ``Predictions.write`` hands the host writer for ``unit``."""
    sent: list[list[tuple[str, object]]] = []

    class Capture:
        def write(self, pieces: list[tuple[str, object]]) -> bool:
            sent.append(list(pieces))
            return True

    store.predictions.host = Capture()  # type: ignore[assignment]
    try:
        store.predictions.write([unit])
    finally:
        store.predictions.host = None
    return sent[0]


class Blocked:
    """The SQLite file's writer lock held by another holder (as another process's commit would), so that frames
    pile up at the writer; ``release`` lets it go."""

    def __init__(self, store: PredictionStore) -> None:
        assert store.database.lock_path is not None
        self.fd = os.open(store.database.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def wait_for_a_waiter(self) -> None:
        """Until another holder waits for the lock (a blocked request is listed with ``->`` in /proc/locks)."""
        inode = os.fstat(self.fd).st_ino
        deadline = time.monotonic() + 30
        while not any(
            line.split()[1] == "->" and line.split()[-3].endswith(f":{inode}")
            for line in Path("/proc/locks").read_text().splitlines()
            if len(line.split()) > 4
        ):
            assert time.monotonic() < deadline, "nobody waits for the writer lock"
            time.sleep(0.01)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def send(path: str, frame: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(frame)  # returned: the frame is in the writer's receive queue
    return sock


def answer(sock: socket.socket) -> str:
    (n,) = HEADER.unpack(read_exactly(sock, HEADER.size))
    return read_exactly(sock, n).decode() if n else ""


@pytest.fixture
def writer(store: PredictionStore, short_dir: Path) -> Iterator[tuple[HostWriter, str]]:
    """A HostWriter in a thread of this process, on its own connection to the store's file; stopped by closing the
    pipe standing for ``shipml serve``'s. It commits what has arrived (no gathering)."""
    yield from _writer(store, short_dir, gather_s=0.0)


@pytest.fixture
def gathering_writer(store: PredictionStore, short_dir: Path) -> Iterator[tuple[HostWriter, str]]:
    """The same, waiting up to a minute for the frames of the workers of its previous commit."""
    yield from _writer(store, short_dir, gather_s=60.0)


def _writer(store: PredictionStore, short_dir: Path, gather_s: float) -> Iterator[tuple[HostWriter, str]]:
    other = PredictionStore(store.uri)  # the writer's own engines, as its process has
    path = str(short_dir / "w.sock")
    read_end, write_end = os.pipe()
    host = HostWriter(other.database, listen(path), parent=read_end, gather_s=gather_s)
    thread = threading.Thread(target=host.run, daemon=True)
    thread.start()
    yield host, path
    os.close(write_end)
    thread.join(timeout=10)
    os.close(read_end)
    other.close()


def test_frames_that_arrive_together_are_one_commit(store: PredictionStore, writer: tuple[HostWriter, str]) -> None:
    host, path = writer
    blocked = Blocked(store)
    first = send(path, encode(pieces_of(store, rows(3, "a"))))  # taken at once; its commit waits for the lock
    blocked.wait_for_a_waiter()
    second = send(path, encode(pieces_of(store, rows(2, "b"))))
    third = send(path, encode(pieces_of(store, rows(4, "c"))))
    blocked.release()
    assert [answer(s) for s in (first, second, third)] == ["", "", ""]
    assert store.predictions.count() == 9
    assert host.commits == 2  # the two frames that waited went in one commit (one WAL sync) together


def test_a_commit_waits_for_the_workers_of_the_previous_one(
    store: PredictionStore, gathering_writer: tuple[HostWriter, str]
) -> None:
    """Worker a's frame is committed alone (the file's lock held meanwhile), b's arrives during that commit: the
    next commit waits for a's next frame too, and holds both (two commits for three frames, not three)."""
    host, path = gathering_writer
    blocked = Blocked(store)
    a = send(path, encode(pieces_of(store, rows(1, "a1"))))
    blocked.wait_for_a_waiter()
    b = send(path, encode(pieces_of(store, rows(2, "b1"))))
    blocked.release()
    assert answer(a) == ""
    time.sleep(0.2)  # b's frame waits for a's next one
    a.sendall(encode(pieces_of(store, rows(3, "a2"))))
    assert answer(b) == "" and answer(a) == ""
    assert store.predictions.count() == 6
    assert host.commits == 2


def test_a_worker_that_went_quiet_delays_nobody(
    store: PredictionStore, gathering_writer: tuple[HostWriter, str]
) -> None:
    """Only the workers of the previous commit are waited for: one connected worker sending nothing does not hold
    another's commits (each is answered at once, far within the writer's minute of gathering)."""
    host, path = gathering_writer
    quiet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    quiet.connect(path)
    busy = send(path, encode(pieces_of(store, rows(1, "first"))))
    busy.settimeout(20)  # a wait for the quiet worker would last the minute: a timeout here, not a hang
    assert answer(busy) == ""
    for i in range(3):
        busy.sendall(encode(pieces_of(store, rows(1, f"next-{i}"))))
        assert answer(busy) == ""
    assert host.commits == 4 and store.predictions.count() == 4
    quiet.close()


def test_a_frame_that_fails_fails_alone(store: PredictionStore, writer: tuple[HostWriter, str]) -> None:
    """A commit of two workers' frames that fails is tried again for each: the good one is stored and answered
    empty, the bad one gets the database's reason."""
    _, path = writer
    blocked = Blocked(store)
    first = send(path, encode(pieces_of(store, rows(1, "a"))))
    blocked.wait_for_a_waiter()
    good = send(path, encode(pieces_of(store, rows(2, "good"))))
    bad = send(path, encode([("INSERT INTO no_such_table VALUES (?)", (1,))]))
    blocked.release()
    assert answer(first) == "" and answer(good) == ""
    assert "no such table: no_such_table" in answer(bad)
    assert store.predictions.count() == 3


def test_a_link_raises_the_writers_failure(store: PredictionStore, writer: tuple[HostWriter, str]) -> None:
    _, path = writer
    link = HostLink(path)
    with pytest.raises(HostWriteFailed, match="no such table"):
        link.write([("INSERT INTO no_such_table VALUES (?)", (1,))])
    assert link.write(pieces_of(store, rows(2, "after")))  # the connection serves on
    assert store.predictions.count() == 2


def test_the_store_writes_through_the_link(store: PredictionStore, writer: tuple[HostWriter, str]) -> None:
    host, path = writer
    store.predictions.host = HostLink(path)
    store.predictions.write([rows(5, "x"), rows(70, "batch")])  # rows and a columnar batch
    assert store.predictions.count() == 75
    assert host.commits == 1 and store.predictions.host.unreachable == 0


def test_without_a_writer_the_worker_commits_itself(store: PredictionStore, short_dir: Path) -> None:
    counted: list[int] = []
    store.predictions.host = link = HostLink(str(short_dir / "nobody.sock"), on_unreachable=lambda: counted.append(1))
    store.predictions.write([rows(3, "x")])
    assert store.predictions.count() == 3 and link.unreachable == 1 and counted == [1]


def test_a_writer_killed_under_load_loses_no_row_and_comes_back(store: PredictionStore, short_dir: Path) -> None:
    """Two threads (as two workers) write through the writer process while it is SIGKILLed: each write returns
    (through the writer, or committed by the worker itself), every row is stored once, and a new writer takes the
    workers' rows again."""
    process = HostWriterProcess(store.uri, "FULL", short_dir)
    process.start()
    try:
        first_pid = process.pid
        deadline = time.monotonic() + 30
        while not os.path.exists(process.socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        links = [HostLink(process.socket_path) for _ in range(2)]
        stores = [PredictionStore(store.uri) for _ in range(2)]
        for s, link in zip(stores, links, strict=True):
            s.predictions.host = link
        written = [0, 0]
        stop = threading.Event()

        def work(k: int) -> None:
            while not stop.is_set():
                stores[k].predictions.write([rows(3, f"w{k}-{written[k]}")])
                written[k] += 1

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while min(written) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(first_pid, signal.SIGKILL)  # type: ignore[arg-type]
        while (process.restarts == 0 or process.pid == first_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.restarts == 1
        while not os.path.exists(process.socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(RETRY_AFTER_S + 0.5)  # each link asks the writer again RETRY_AFTER_S after its last failure
        before = [link.unreachable for link in links]
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        after = [link.unreachable for link in links]
        print(f"FIGURE host writer killed: writes {sum(written)}, committed by the workers themselves {after}")
        assert min(before) > 0  # the workers did commit themselves while it was down
        assert after == before  # and the new writer took their rows again
        assert store.predictions.count() == 3 * sum(written)
        for s in stores:
            s.close()
    finally:
        process.stop()
    assert not os.path.exists(process.socket_path)


def test_a_writer_that_does_not_answer_is_not_asked_again_at_once(store: PredictionStore, short_dir: Path) -> None:
    """A writer stuck (SIGSTOP, a hung disk) past the link's timeout: that commit is made by the worker, and so are
    the next ones for ``RETRY_AFTER_S`` without asking it again (each would wait the timeout, and its requests 503)."""
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(str(short_dir / "stuck.sock"))
    stuck.listen(8)  # connections wait in its backlog: accepted by nobody, answered never
    store.predictions.host = link = HostLink(str(short_dir / "stuck.sock"), timeout_s=0.2)
    store.predictions.write([rows(2, "first")])
    store.predictions.write([rows(3, "second")])
    assert store.predictions.count() == 5 and link.unreachable == 2
    conn, _ = stuck.accept()
    conn.settimeout(0.5)
    (n,) = HEADER.unpack(read_exactly(conn, HEADER.size))
    read_exactly(conn, n)
    with pytest.raises(ConnectionError):  # the link closed: the second commit was never sent
        read_exactly(conn, 1)
    conn.close()
    stuck.close()
