"""gRPC server TLS that follows a renewing certificate and trust bundle (mutual TLS)."""

from __future__ import annotations

from collections.abc import Callable

import grpc


class ReloadingServerCredentials:
    """Server credentials requiring a client certificate; after :meth:`changed`, the next
    handshake fetches ``config()`` again (a renewed certificate, a rotated bundle)."""

    def __init__(self, config: Callable[[], grpc.ServerCertificateConfiguration]):
        self._config = config
        self._generation = 0
        self._fetched = 0

    def changed(self) -> None:
        self._generation += 1

    def credentials(self) -> grpc.ServerCredentials:
        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if self._fetched == self._generation:
                return None
            self._fetched = self._generation
            return self._config()

        self._fetched = self._generation
        return grpc.dynamic_ssl_server_credentials(self._config(), fetch,
                                                   require_client_authentication=True)
