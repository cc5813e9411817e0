"""Tiny servers for testing the mesh with each protocol, listening on 127.0.0.1:$PORT.

    python -m shoal.testing.apps http   # JSON echo of the request, names who served it
    python -m shoal.testing.apps h2c    # the same over cleartext HTTP/2 only
    python -m shoal.testing.apps grpc   # unary /shoal.test.Echo/Echo, no .proto needed
    python -m shoal.testing.apps tcp    # echoes bytes, prefixed with the workload name

The workload name comes from $SHOAL_WORKLOAD (set by the agent) or $NAME.
HTTP knobs: header ``x-echo-status`` (reply status), ``x-echo-delay-ms`` (sleep first);
with ``x-echo-fail-first: N`` and ``x-echo-id: ID`` only the first N requests carrying
that ID fail so (status 500 unless ``x-echo-status`` says otherwise; ``x-echo-reset: 1``
closes the connection without an answer instead), later ones answer 200 at once — how
tests tell retries apart; env ``FAIL_EVERY=N`` answers every Nth request with 500 (1:
always); env ``FAIL_IF_EXISTS=PATH`` answers 503 while the file PATH exists; env
``REQUEST_LOG=PATH`` appends each request (method, path, headers) to PATH as a JSON line.
A WebSocket upgrade is accepted and each message echoed.
The gRPC echo answers every method of every service, and says which method it got.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRPC_METHOD = "/shoal.test.Echo/Echo"
METADATA_REQUEST = b"?metadata"  # the gRPC echo answers this with the metadata it got
_COUNT = [0]
_COUNT_LOCK = threading.Lock()
_SEEN: OrderedDict[str, int] = OrderedDict()  # x-echo-id -> requests seen (bounded)
_SEEN_MAX = 10_000
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's, for Sec-WebSocket-Accept


def _name() -> str:
    return os.environ.get("SHOAL_WORKLOAD") or os.environ.get("NAME", "app")


def _port() -> int:
    return int(os.environ["PORT"])


def _echo(method: str, path: str, headers: dict[str, str], body: bytes,
          **more: str) -> bytes:
    """The HTTP echoes' answer: who served it and what it got."""
    return json.dumps({"served_by": _name(), "method": method, "path": path,
                       "headers": headers, "body": body.decode(errors="replace"),
                       **more}).encode()


def _serve_streams(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                    Awaitable[None]]) -> None:
    """Serve connections on 127.0.0.1:$PORT with ``handle`` until killed."""
    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", _port())
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _failing(self) -> bool:
        """Does this request get the knobs' failure? Always, unless x-echo-fail-first
        limits it to the first N requests of its x-echo-id."""
        first = self.headers.get("x-echo-fail-first")
        if first is None:
            return True
        key = self.headers.get("x-echo-id", "")
        with _COUNT_LOCK:
            seen = _SEEN.pop(key, 0) + 1
            _SEEN[key] = seen
            while len(_SEEN) > _SEEN_MAX:
                _SEEN.popitem(last=False)
        return seen <= int(first)

    def _log(self) -> None:
        if path := os.environ.get("REQUEST_LOG"):
            line = json.dumps({"method": self.command, "path": self.path,
                               "headers": dict(self.headers.items())})
            with _COUNT_LOCK, open(path, "a") as f:
                f.write(line + "\n")

    def _websocket(self) -> None:
        """RFC 6455, the server's side: accept, then echo each text and binary message
        (frames of at most 1 MiB, unfragmented) until the client closes."""
        accept = base64.b64encode(hashlib.sha1(
            (self.headers.get("Sec-WebSocket-Key", "") + _WS_GUID).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while len(head := self.rfile.read(2)) == 2:
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size >= 126:
                size = int.from_bytes(self.rfile.read(2 if size == 126 else 8), "big")
            if size > 1 << 20:
                return
            mask = self.rfile.read(4) if head[1] & 0x80 else bytes(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if opcode == 8:  # close: answer it and stop
                self._frame(8, data[:2])
                return
            if opcode in (1, 2, 9):  # text, binary: echoed; ping: pong
                self._frame(10 if opcode == 9 else opcode, data)

    def _frame(self, opcode: int, data: bytes) -> None:
        size = len(data)
        head = bytes([0x80 | opcode]) + (
            bytes([size]) if size < 126 else bytes([126]) + size.to_bytes(2, "big")
            if size < 1 << 16 else bytes([127]) + size.to_bytes(8, "big"))
        self.wfile.write(head + data)
        self.wfile.flush()

    def _reply(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._log()
        failing = self._failing()
        limited = "x-echo-fail-first" in self.headers
        status = int(self.headers.get("x-echo-status", "500" if limited else "200")) \
            if failing else 200
        if failing:
            time.sleep(int(self.headers.get("x-echo-delay-ms", "0")) / 1000)
        if failing and self.headers.get("x-echo-reset") == "1":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))  # an RST, no answer
            self.close_connection = True
            return
        every = int(os.environ.get("FAIL_EVERY", "0"))
        with _COUNT_LOCK:
            _COUNT[0] += 1
            if every and _COUNT[0] % every == 0:
                status = 500
        flag = os.environ.get("FAIL_IF_EXISTS")
        if flag and os.path.exists(flag):
            status = 503
        out = _echo(self.command, self.path, dict(self.headers.items()), body)
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


def serve_h2c() -> None:
    """The JSON echo of ``http`` over cleartext HTTP/2 only (prior knowledge, as a
    ``kubernetes.io/h2c`` port speaks); its answers say ``"protocol": "HTTP/2"``. Small
    requests and answers (a test app: no flow-control waits)."""
    import h2.config
    import h2.connection
    import h2.events

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        requests[event.stream_id] = (dict(event.headers), bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        if len(requests[event.stream_id][1]) < 1 << 20:
                            requests[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = requests.pop(event.stream_id)
                        out = _echo(headers[":method"], headers[":path"],
                                    {k: v for k, v in headers.items()
                                     if not k.startswith(":")}, bytes(body),
                                    protocol="HTTP/2")
                        conn.send_headers(event.stream_id, [
                            (":status", "200"), ("content-type", "application/json"),
                            ("content-length", str(len(out))), ("x-served-by", _name())])
                        conn.send_data(event.stream_id, out, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    _serve_streams(handle)


def serve_grpc() -> None:
    import grpc

    class AnyMethod(grpc.GenericRpcHandler):
        """Every method of every service: the conformance suites name their own."""

        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
                if request == METADATA_REQUEST:  # who answered, what it received
                    return json.dumps({"served_by": _name(), "method": details.method,
                                       "metadata": [[k, v] for k, v in
                                                    context.invocation_metadata()]}).encode()
                return _name().encode() + b":" + request
            return grpc.unary_unary_rpc_method_handler(echo)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(f"127.0.0.1:{_port()}")
    server.start()
    server.wait_for_termination()


def serve_tcp() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(_name().encode() + b":" + data)
            await writer.drain()
        writer.close()

    _serve_streams(handle)


def grpc_echo(target: str, message: bytes, *, authority: str | None = None,
              timeout: float = 5.0) -> bytes:
    """Call the echo method (client side, for tests)."""
    import grpc

    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(GRPC_METHOD)
        return call(message, timeout=timeout)


SERVERS = {"http": serve_http, "h2c": serve_h2c, "grpc": serve_grpc, "tcp": serve_tcp}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SERVERS:
        sys.exit(f"usage: python -m shoal.testing.apps {{{','.join(SERVERS)}}}")
    SERVERS[sys.argv[1]]()
