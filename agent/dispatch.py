"""One process, two listeners: the server port and the registry port share the agent's
libtorrent session and downloads, so both are served by one gunicorn worker and told apart
here by the port each request arrived on."""

from __future__ import annotations

from collections.abc import Callable


class ByListener:
    """WSGI app handing a request to the app registered for the local port of its
    connection, or to `default`. The port comes from the accepted socket (gunicorn puts it
    in `gunicorn.socket`; `SERVER_PORT`, which gunicorn also takes from the listener for TCP
    binds, serves other WSGI servers), never from the Host header a client chooses."""

    def __init__(self, default: Callable, by_port: dict[int, Callable]):
        self.default = default
        self.by_port = {int(port): app for port, app in by_port.items() if port}

    @staticmethod
    def local_port(environ: dict) -> int | None:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            try:
                return sock.getsockname()[1]
            except (OSError, IndexError, TypeError):
                pass
        try:
            return int(environ.get("SERVER_PORT", ""))
        except ValueError:
            return None

    def __call__(self, environ, start_response):
        app = self.by_port.get(self.local_port(environ), self.default)
        return app(environ, start_response)
