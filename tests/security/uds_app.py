"""A tiny HTTP app listening on the Unix socket ``$SHOAL_APP_SOCKET`` (what ``shoal run
--app-socket`` gives it), standard library only. Every request gets 200 and JSON: the
path, the request headers (lower-cased) and the ``PORT`` it was given (None: not set).

Run: python -m tests.security.uds_app
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # no disable_nagle_algorithm: TCP_NODELAY does not exist on a Unix socket

    def do_GET(self) -> None:
        body = json.dumps({
            "path": self.path, "port": os.environ.get("PORT"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # a Unix peer has no (host, port)
        return "unix"

    def log_message(self, *args: object) -> None:
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    with Server(os.environ["SHOAL_APP_SOCKET"], Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
