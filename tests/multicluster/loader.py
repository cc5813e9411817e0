"""Sequential HTTP requests through a sidecar, one JSON line per request, until killed.

Runs inside a client pod (the sidecar's outbound port is on the pod's loopback):
    python -m tests.multicluster.loader URL PROXY OUT_FILE
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> None:
    url, proxy, out = sys.argv[1:4]
    with httpx.Client(proxy=proxy, timeout=10.0, trust_env=False) as http, \
            open(out, "a") as f:
        while True:
            line: dict[str, object]
            start = time.time()
            try:
                r = http.get(url)
                body = r.json() if r.headers.get("content-type") == "application/json" else {}
                headers = {k.lower(): v for k, v in body.get("headers", {}).items()}
                line = {"status": r.status_code, "by": body.get("served_by", ""),
                        "xfcc": headers.get("x-forwarded-client-cert", "")}
            except (httpx.HTTPError, ValueError) as e:
                line = {"status": 0, "by": "", "error": type(e).__name__}
            line |= {"t": round(start, 4), "ms": round((time.time() - start) * 1000, 2)}
            f.write(json.dumps(line) + "\n")
            f.flush()
            time.sleep(0.02)


if __name__ == "__main__":
    main()
