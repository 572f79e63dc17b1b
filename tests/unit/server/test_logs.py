"""The log buffer keeps every line whole while the store writer's thread and the event loop both write."""

from __future__ import annotations

import io
import threading
import time

from shipml.server.logs import LineBuffer


class SlowStream(io.BytesIO):
    """A pipe under pressure: the write lets other threads run, as a real write system call does."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        time.sleep(0)
        return super().write(data)


def test_concurrent_writers_lose_no_line_and_merge_none() -> None:
    stream = SlowStream()
    out = LineBuffer(stream, interval=0.0)  # flush on every line: the most interleaving
    n_threads, n_lines = 6, 2000

    def write(t: int) -> None:
        for i in range(n_lines):
            line = f'{{"t":{t},"i":{i}}}'.encode()
            (out.urgent if i % 7 == 0 else out.msg)(line)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.flush()
    lines = stream.getvalue().split(b"\n")
    assert lines[-1] == b""
    written = lines[:-1]
    assert len(written) == n_threads * n_lines
    assert len(set(written)) == len(written)
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in written)
