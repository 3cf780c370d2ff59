"""The agent's gunicorn worker: the components' own (common.worker), plus one courtesy for docker.

docker (and containerd) first try TLS even against a registry configured as insecure, and
fall back to plain HTTP when that fails. A ClientHello is not an HTTP request line: gunicorn
answers a complete one with a 400 and a warning in the log, but waits for more bytes when
only part of it has arrived. Connections whose first byte is a TLS handshake record are
closed at once instead, so the client falls back immediately and the log stays quiet."""

from __future__ import annotations

import socket

import gevent

from common.worker import Worker

TLS_HANDSHAKE = 0x16


class AgentWorker(Worker):
    def handle(self, listener, client, addr):
        client.setblocking(1)
        first = None
        with gevent.Timeout(self.cfg.keepalive or 30, False):
            try:
                first = client.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
        if first is None or first[:1] == bytes([TLS_HANDSHAKE]):
            # Silent for its whole first-request timeout, or speaking TLS.
            if first:
                self.log.debug("closed a TLS handshake from %s on a plain-HTTP port", addr)
            client.close()
            return
        super().handle(listener, client, addr)
