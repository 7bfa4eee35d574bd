"""A TCP server on loopback that is not an SMTP server: it writes fixed bytes to each connection.

Stands for whatever a user's "SMTP server" may really be (an SSH daemon, a database, an HTTP
service): what it sends must never reach the owner's error texts. It counts connections, so a
test can also show that a refused address was never connected to.
"""

from __future__ import annotations

import socket
import threading

from tests.support.services import free_port


class BannerServer:
    """Accepts connections, writes ``banner``, then reads until the peer closes."""

    def __init__(self, banner: bytes, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.banner = banner
        self.host = host
        self.port = port or free_port()
        self.connections = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> BannerServer:
        """Listen and serve in a daemon thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.sendall(self.banner)
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
