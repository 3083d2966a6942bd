"""A minimal, fast PostHog capture endpoint for the export benchmark, run in its own process.

tests/servers.py's CaptureServer (a ThreadingHTTPServer that validates every event and keeps it) is
built for wire-level tests, not for tens of thousands of events per second; measured with the same
load generator (see bench_export.py) it tops out well below the 20,000 events/s being measured. This
one is asyncio, HTTP/1.1 keep-alive, and per request only gunzips (if `Content-Encoding: gzip`),
parses the JSON and counts `batch` (a body without a non-empty `batch` list gets 400). Both clients
of the benchmark hit the same instance.

`python benchmarks/capture_fast.py [--kind fast|threading]` prints its port on stdout, then answers
`count` lines on stdin with the number of events accepted so far; it exits when stdin closes.
`ServerProcess` runs it from another process. `--kind threading` serves tests/servers.py's
CaptureServer behind the same control protocol, to measure it side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
CAPTURE_PATHS = (b"/batch/", b"/batch")
_OK = b'{"status":"Ok"}'


class FastCapture:
    """Counts the events of every accepted `POST /batch/`."""

    def __init__(self) -> None:
        self.events = 0
        self.requests = 0

    def process(
        self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        if method != b"POST" or path.split(b"?")[0] not in CAPTURE_PATHS:
            return 404, b'{"error":"not found"}'
        try:
            if headers.get(b"content-encoding", b"").lower() == b"gzip":
                body = gzip.decompress(body)
            payload = json.loads(body)
        except (OSError, EOFError, ValueError):
            return 400, b'{"error":"invalid body"}'
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not batch:
            return 400, b'{"error":"batch must be a non-empty list"}'
        self.events += len(batch)
        self.requests += 1
        return 200, _OK

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head[:-4].split(b"\r\n")
                method, target, _version = request_line.split(b" ", 2)
                headers: dict[bytes, bytes] = {}
                for line in lines:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                status, reply = self.process(method, target, headers, body)
                reason = b"OK" if status == 200 else b"Error"
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, reason, len(reply), reply)
                )
                await writer.drain()
                if headers.get(b"connection", b"").lower() == b"close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:  # the server is stopping with this keep-alive connection idle
            pass
        finally:
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(chunks)


def _serve_fast() -> None:
    capture = FastCapture()

    async def main() -> None:
        server = await asyncio.start_server(capture.handle, HOST, 0, limit=1 << 20, backlog=128)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        threading.Thread(target=_control, args=(lambda: capture.events, loop, done), daemon=True).start()
        async with server:
            await done

    asyncio.run(main())


def _serve_threading() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import CaptureServer

    with CaptureServer() as server:
        print(server.port, flush=True)
        _control(lambda: len(server.events), None, None)


def _control(
    count: Callable[[], int], loop: asyncio.AbstractEventLoop | None, done: asyncio.Future[None] | None
) -> None:
    """Answer `count` lines on stdin; at EOF, stop the server."""
    for line in sys.stdin:
        if line.strip() == "count":
            print(count(), flush=True)
    if loop is not None and done is not None:

        def stop() -> None:
            if not done.done():
                done.set_result(None)

        loop.call_soon_threadsafe(stop)


class ServerProcess:
    """A capture endpoint (`kind` "fast" or "threading") in a child process, controlled over a pipe."""

    def __init__(self, kind: str = "fast") -> None:
        self.kind = kind
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--kind", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        self.port = int(self._out.readline())
        self.url = f"http://{HOST}:{self.port}"

    def count(self) -> int:
        """Events accepted so far."""
        self._in.write("count\n")
        self._in.flush()
        return int(self._out.readline())

    def close(self) -> None:
        if self._proc.poll() is None:
            self._in.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._out.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("fast", "threading"), default="fast")
    if parser.parse_args().kind == "fast":
        _serve_fast()
    else:
        _serve_threading()
