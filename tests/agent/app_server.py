"""Test application: serves HTTP on $PORT, writes its pid (+ a child's pid) and env.

usage: app_server.py STATE_DIR [--exit-after SECONDS CODE]
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"workload": os.environ.get("SHOAL_WORKLOAD")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    state = Path(sys.argv[1])
    state.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (state / "env.json").write_text(json.dumps(dict(os.environ)))
    (state / "app.pid").write_text(f"{os.getpid()} {child.pid}\n")
    if "--exit-after" in sys.argv:
        i = sys.argv.index("--exit-after")
        delay, code = float(sys.argv[i + 1]), int(sys.argv[i + 2])
        threading.Timer(delay, lambda: os._exit(code)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
