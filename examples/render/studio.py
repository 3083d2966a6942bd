"""The render studio: a local web page (127.0.0.1 only) that starts renders.

    python -m examples.render.studio [--port 8765]

`POST /render` with JSON `{"path": "clip.mov", "preset": "720p"}` renders and answers
`{"url": ...}` (or `{"error": ...}` with status 500). Events carry `source = "studio"`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import otel_spawn
from examples.render import SPEC_PATH, pipeline

HOST = "127.0.0.1"
PAGE = b"""<!doctype html><title>render studio</title>
<form method="post" action="/render">
  <input name="path" placeholder="clip.mov" required>
  <select name="preset"><option>480p</option><option>720p</option><option selected>1080p</option></select>
  <button>Render</button>
</form>"""


class StudioHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/":
            self._send(404, b'{"error": "not found"}', "application/json")
            return
        self._send(200, PAGE, "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if self.path != "/render":
            self._reply(404, {"error": "not found"})
            return
        try:
            request = self._request()
            path = request["path"]
        except (KeyError, ValueError):
            self._reply(400, {"error": 'send {"path": "...", "preset": "1080p"}'})
            return
        try:
            url = pipeline.render(path, request.get("preset", "1080p"), fail_at=request.get("fail_at"))
        except pipeline.RenderError as exc:
            self._reply(500, {"error": str(exc)})
            return
        self._reply(200, {"url": url})

    def _request(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type", "").startswith("application/json"):
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return data
        return {key: values[0] for key, values in parse_qs(raw.decode()).items()}

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_server(port: int = 0) -> ThreadingHTTPServer:
    """The studio on 127.0.0.1:`port` (0: any free port), not yet serving."""
    return ThreadingHTTPServer((HOST, port), StudioHandler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render-studio", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        otel_spawn.configure(app="render", app_version="1.0.0", source="studio", funnel_spec=SPEC_PATH)
    except otel_spawn.ConfigError as exc:
        print(f"render studio: telemetry off: {exc}", file=sys.stderr)
    server = make_server(args.port)
    print(f"render studio on http://{HOST}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        otel_spawn.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
