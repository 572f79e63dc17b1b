"""A TCP forwarder on 127.0.0.1 that can stop forwarding without closing anything: a database that stopped
answering (a partition, a stuck server, a failover in progress), as its clients see it.

``stall()`` holds every byte in both directions of every connection, open or new (a new one is accepted, and its
upstream is opened, but nothing passes); ``flow()`` forwards again what was held and what comes. No connection is
closed by a stall: a client learns of it only by its own timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class StallProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` until ``stall()``; ``flow()`` resumes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="stall-proxy", daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    def uri_for(self, uri: str) -> str:
        """``uri`` (an SQLAlchemy URI on 127.0.0.1:``target_port``) through this proxy."""
        return uri.replace(f"127.0.0.1:{self.target_port}", f"127.0.0.1:{self.port}")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # read during a stall: held until the flow resumes
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
