"""A minimal HTTP file server for the `http` backend (Kraken ships one called testfs):
GET/HEAD/PUT /{key}, GET /list/{prefix}. For tests and the dev cluster, not production.

    python -m common.backends.testfs --root DIR --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common.backends import keys


def make_handler(root: Path):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet; errors still reach stderr below
            pass

        def _key(self) -> str | None:
            try:
                return keys.check(unquote(urlsplit(self.path).path.lstrip("/")))
            except ValueError:
                self._reply(400, b"bad key\n")
                return None

        def _reply(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            path = urlsplit(self.path).path
            if path.startswith("/list/") or path == "/list":
                prefix = unquote(path[len("/list/"):])
                found = []
                for dirpath, _, files in os.walk(root):
                    for name in files:
                        key = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                        if key.startswith(prefix) and not name.startswith(".upload-"):
                            found.append(key)
                return self._reply(200, json.dumps(sorted(found)).encode(), "application/json")
            self._send_file()

        def do_HEAD(self):
            self._send_file()

        def _send_file(self):
            key = self._key()
            if key is None:
                return
            try:
                f = open(root / key, "rb")
            except (FileNotFoundError, IsADirectoryError):
                return self._reply(404, b"not found\n")
            with f:
                size = os.fstat(f.fileno()).st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if self.command == "GET":
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

        def do_PUT(self):
            key = self._key()
            if key is None:
                return
            length = self.headers.get("Content-Length")
            if length is None:
                return self._reply(411, b"Content-Length required\n")
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            left = int(length)
            with os.fdopen(fd, "wb") as out:
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    out.write(chunk)
                    left -= len(chunk)
            if left:
                os.unlink(tmp)
                self.close_connection = True
                return self._reply(400, b"short body\n")
            os.replace(tmp, path)
            self._reply(201)

    return Handler


def serve(root: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    Path(root).mkdir(parents=True, exist_ok=True)
    return ThreadingHTTPServer((host, port), make_handler(Path(root).resolve()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    server = serve(args.root, args.host, args.port)
    print(f"testfs listening on {server.server_address[0]}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
