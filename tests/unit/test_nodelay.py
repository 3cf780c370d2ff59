"""torrents.sockets.set_nodelay: Nagle off on this process's TCP sockets, once each."""

import socket

from torrents.sockets import set_nodelay


def _nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_sets_every_tcp_socket_once_and_leaves_others_alone():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    a, b = socket.socketpair()  # AF_UNIX: no TCP options
    try:
        assert [_nodelay(s) for s in (listener, client, server)] == [0, 0, 0]
        seen: set[str] = set()
        assert set_nodelay(seen) >= 3
        assert [_nodelay(s) for s in (listener, client, server)] == [1, 1, 1]
        assert set_nodelay(seen) == 0  # nothing new
        # A connection accepted later inherits the option from the listener.
        late = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        assert _nodelay(accepted) == 1
        assert set_nodelay(seen) == 2  # both new ends: the client one needed it
        assert _nodelay(late) == 1
        a.sendall(b"x")
        assert b.recv(1) == b"x"  # untouched and still open
        late.close()
        accepted.close()
    finally:
        for s in (listener, client, server, a, b):
            s.close()
