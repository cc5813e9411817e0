"""A small synchronous client of the control plane's REST API (used by the CLI)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from shoal.cli.credentials import token_for
from shoal.control.ports import DEFAULT_API_PORT
from shoal.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ShoalError,
    Unauthenticated,
    Unavailable,
    ValidationError,
    Violation,
)

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_API_PORT}"


def default_url() -> str:
    return os.environ.get("SHOAL_CONTROL_PLANE", DEFAULT_URL)


class _Credential(httpx.Auth):
    """The operator token for one control plane, looked up on every request (a renewed
    token file is picked up; a control plane that is still starting has none yet)."""

    def __init__(self, url: str, token: str | None):
        self._url = url
        self._token = token

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        token = self._token or token_for(self._url)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class ApiClient:
    def __init__(self, base_url: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None,
                 headers: dict[str, str] | None = None, token: str | None = None):
        """``headers`` or ``token`` given: use them; otherwise the credential configured
        for BASE_URL (:mod:`shoal.cli.credentials`)."""
        self.base_url = (base_url or default_url()).rstrip("/")
        auth = None if headers is not None else _Credential(self.base_url, token)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers=headers, auth=auth)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise Unavailable(f"cannot reach the control plane at {self.base_url} ({e}); "
                              "is it running? (`shoal up` starts one)") from None
        if resp.status_code < 400:
            return resp.json()
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text.strip() or resp.reason_phrase}
        message = body.get("error", resp.reason_phrase)
        if resp.status_code == 422 and body.get("violations"):
            raise ValidationError([Violation(v.get("path", ""), v.get("message", ""),
                                             v.get("document", ""))
                                   for v in body["violations"]])
        if resp.status_code == 404:
            raise NotFound(message)
        if resp.status_code == 401:
            raise Unauthenticated(f"{message} (control plane {self.base_url})")
        if resp.status_code == 403:
            raise PermissionDenied(message)
        if resp.status_code == 409:
            raise Conflict(message)
        if resp.status_code == 503:
            raise Unavailable(message)
        raise ShoalError(f"control plane answered {resp.status_code}: {message}")

    # -- resources ------------------------------------------------------------------------

    def apply(self, text: str, *, source: str = "", dry_run: bool = False,
              namespace: str | None = None) -> Any:
        """``namespace``: for documents that name none; one naming another is refused."""
        params = {"source": source}
        if dry_run:
            params["dryRun"] = "true"
        if namespace:
            params["namespace"] = namespace
        return self.request("POST", "/api/v1/apply", content=text.encode(), params=params,
                            headers={"Content-Type": "application/yaml"})

    def list(self, kind: str | None = None, namespace: str | None = None,
             label_selector: str | None = None) -> Any:
        params = {k: v for k, v in (("kind", kind), ("namespace", namespace),
                                    ("labelSelector", label_selector)) if v}
        return self.request("GET", "/api/v1/resources", params=params)

    def get(self, kind: str, namespace: str, name: str) -> Any:
        return self.request("GET", f"/api/v1/resources/{kind}/{namespace}/{name}")

    def delete(self, kind: str, namespace: str, name: str) -> Any:
        return self.request("DELETE", f"/api/v1/resources/{kind}/{namespace}/{name}")

    # -- proxies --------------------------------------------------------------------------

    def mesh_config(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/meshconfig")

    def proxies(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v1/proxies")["proxies"]

    def sync_state(self) -> dict[str, Any]:
        """``{"proxies": [...], "revision": store revision, "pushedRevision": N}``."""
        return dict(self.request("GET", "/api/v1/proxies"))

    def proxy_config(self, name: str, kind: str | None = None) -> Any:
        params = {"type": kind} if kind else {}
        return self.request("GET", f"/api/v1/proxies/{name}/config", params=params)

    # -- identity -------------------------------------------------------------------------

    def create_token(self, namespace: str, service_account: str, ttl_seconds: float = 86400
                     ) -> dict[str, Any]:
        return self.request("POST", "/api/v1/tokens", json={
            "namespace": namespace, "serviceAccount": service_account,
            "ttlSeconds": ttl_seconds})

    def ca_status(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/ca")

    def rotate_root(self) -> dict[str, Any]:
        return self.request("POST", "/api/v1/ca/rotate-root")

    def prune_roots(self) -> dict[str, Any]:
        return self.request("POST", "/api/v1/ca/prune-roots")

    def workload_certs(self, namespace: str, workload: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/certificates/{namespace}/{workload}")

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False
