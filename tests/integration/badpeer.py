"""A BitTorrent peer that claims to have every piece and answers each request with random
bytes: the corrupt seeder of the hash-failure tests. Just enough of BEP 3 for libtorrent to
talk to it: handshake, bitfield, unchoke, request -> piece."""

from __future__ import annotations

import os
import socket
import struct
import threading

PSTR = b"\x13BitTorrent protocol"


class CorruptPeer:
    def __init__(self, infohash: bytes, num_pieces: int, host: str = "127.0.0.99"):
        self.infohash = infohash
        self.num_pieces = num_pieces
        self.peer_id = b"-XX0001-" + os.urandom(12)
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.addr = self.sock.getsockname()
        self.blocks_sent = 0
        self.connections = 0
        self.closed_by_peer = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CorruptPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            hs = self._recv(conn, 68)
            if hs[:20] != PSTR or hs[28:48] != self.infohash:
                return
            conn.sendall(PSTR + b"\0" * 8 + self.infohash + self.peer_id)
            bits = bytearray((self.num_pieces + 7) // 8)
            for i in range(self.num_pieces):
                bits[i // 8] |= 0x80 >> (i % 8)
            conn.sendall(struct.pack(">IB", 1 + len(bits), 5) + bits)  # bitfield
            conn.sendall(struct.pack(">IB", 1, 1))  # unchoke
            while not self._stop.is_set():
                (length,) = struct.unpack(">I", self._recv(conn, 4))
                if length == 0:
                    continue  # keep-alive
                msg = self._recv(conn, length)
                if msg[0] == 6:  # request: answer with garbage of the asked length
                    index, begin, size = struct.unpack(">III", msg[1:13])
                    conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin) + os.urandom(size))
                    self.blocks_sent += 1
        except (ConnectionError, OSError, struct.error):
            self.closed_by_peer += 1
        finally:
            conn.close()
