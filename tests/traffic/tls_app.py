"""A TLS echo server for tests: ``python tls_app.py`` with $PORT, $CERT, $KEY (PEM files)
and optionally $CLIENT_CA (then a client certificate from that CA is required).

It terminates TLS itself (the mesh only passes it through) and answers every chunk with
``<workload>:<sni>:<chunk>``, so a test sees who served it and which SNI arrived.
"""

from __future__ import annotations

import asyncio
import os
import ssl


def _name() -> str:
    return os.environ.get("SHOAL_WORKLOAD") or os.environ.get("NAME", "tls-app")


def main() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
    if os.environ.get("CLIENT_CA"):
        ctx.load_verify_locations(os.environ["CLIENT_CA"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    seen: dict[int, str] = {}

    def on_sni(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        seen[id(sock)] = server_name or "-"

    ctx.sni_callback = on_sni  # type: ignore[assignment]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        sni = seen.pop(id(obj), "-")
        try:
            while data := await reader.read(65536):
                writer.write(f"{_name()}:{sni}:".encode() + data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]),
                                            ssl=ctx)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
