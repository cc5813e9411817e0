"""Tiny servers for testing the mesh with each protocol, listening on 127.0.0.1:$PORT.

    python -m shoal.testing.apps http   # JSON echo of the request, names who served it
    python -m shoal.testing.apps grpc   # unary /shoal.test.Echo/Echo, no .proto needed
    python -m shoal.testing.apps tcp    # echoes bytes, prefixed with the workload name

The workload name comes from $SHOAL_WORKLOAD (set by the agent) or $NAME.
HTTP knobs: header ``x-echo-status`` (reply status), ``x-echo-delay-ms`` (sleep first);
env ``FAIL_EVERY=N`` answers every Nth request with 500 (1: always); env
``FAIL_IF_EXISTS=PATH`` answers 503 while the file PATH exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRPC_METHOD = "/shoal.test.Echo/Echo"
METADATA_REQUEST = b"?metadata"  # the gRPC echo answers this with the metadata it got
_COUNT = [0]
_COUNT_LOCK = threading.Lock()


def _name() -> str:
    return os.environ.get("SHOAL_WORKLOAD") or os.environ.get("NAME", "app")


def _port() -> int:
    return int(os.environ["PORT"])


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status = int(self.headers.get("x-echo-status", "200"))
        time.sleep(int(self.headers.get("x-echo-delay-ms", "0")) / 1000)
        every = int(os.environ.get("FAIL_EVERY", "0"))
        with _COUNT_LOCK:
            _COUNT[0] += 1
            if every and _COUNT[0] % every == 0:
                status = 500
        flag = os.environ.get("FAIL_IF_EXISTS")
        if flag and os.path.exists(flag):
            status = 503
        out = json.dumps({"served_by": _name(), "method": self.command, "path": self.path,
                          "headers": dict(self.headers.items()),
                          "body": body.decode(errors="replace")}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("x-served-by", _name())
        self.end_headers()
        self.wfile.write(out)

    # (no OPTIONS: a preflight that reaches the app gets 501, tests rely on it)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_http() -> None:
    ThreadingHTTPServer(("127.0.0.1", _port()), _EchoHandler).serve_forever()


def serve_grpc() -> None:
    import grpc

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == METADATA_REQUEST:  # who answered, and the metadata it received
            return json.dumps({"served_by": _name(), "metadata": [
                [k, v] for k, v in context.invocation_metadata()]}).encode()
        return _name().encode() + b":" + request

    handler = grpc.method_handlers_generic_handler("shoal.test.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{_port()}")
    server.start()
    server.wait_for_termination()


def serve_tcp() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(_name().encode() + b":" + data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", _port())
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def grpc_echo(target: str, message: bytes, *, authority: str | None = None,
              timeout: float = 5.0) -> bytes:
    """Call the echo method (client side, for tests)."""
    import grpc

    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(GRPC_METHOD)
        return call(message, timeout=timeout)


SERVERS = {"http": serve_http, "grpc": serve_grpc, "tcp": serve_tcp}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SERVERS:
        sys.exit(f"usage: python -m shoal.testing.apps {{{','.join(SERVERS)}}}")
    SERVERS[sys.argv[1]]()
