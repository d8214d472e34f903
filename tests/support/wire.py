"""The project's own broker payloads (``tests/fixtures/wire``), served from a local HTTP server.

The fixtures are hand-written from the brokers' documented formats (see the README beside them),
so tests that use them run in a fresh clone, without ``../shared/reference``. ``WireServer``
answers chosen routes with a fixture's bytes on ``127.0.0.1`` (pytest-httpserver underneath), so
the payload travels through the real SDK client (alpaca-py, kiteconnect) and our parsing exactly
as the broker's answer would; every request is recorded, and a request no route answers fails
the test at teardown (``check``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

WIRE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "wire"


def wire_bytes(broker: str, name: str) -> bytes:
    """Return one fixture file's bytes (``broker`` is ``alpaca`` or ``kite``)."""
    return (WIRE_DIR / broker / name).read_bytes()


def wire_json(broker: str, name: str) -> Any:
    """Return one JSON fixture, parsed."""
    return json.loads(wire_bytes(broker, name))


class WireServer:
    """A local server answering routes (method, path) with fixture bodies."""

    def __init__(self, http: HTTPServer) -> None:
        self.http = http

    @property
    def url(self) -> str:
        """Return the base URL, without a trailing slash (``http://127.0.0.1:PORT``)."""
        return self.http.url_for("/").rstrip("/")

    def serve(
        self,
        method: str,
        path: str,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer every ``method path`` request (any query) with ``body``."""
        self.http.expect_request(path, method=method).respond_with_data(
            body, status=status, content_type=content_type, headers=dict(headers or {})
        )

    def serve_with(self, method: str, path: str, handler: Callable[[Request], Response]) -> None:
        """Answer ``method path`` with whatever ``handler`` returns for the request."""
        self.http.expect_request(path, method=method).respond_with_handler(handler)

    def requests(self, path: str | None = None) -> list[Request]:
        """Return the requests received so far (to ``path`` only, when given), oldest first."""
        return [req for req, _ in self.http.log if path is None or req.path == path]

    def reset(self) -> None:
        """Forget every route and recorded request."""
        self.http.clear()

    def check(self) -> None:
        """Fail if a request came that no route answers."""
        self.http.check_assertions()


@contextmanager
def wire_server() -> Iterator[WireServer]:
    """Run a ``WireServer`` on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    http = HTTPServer(host="127.0.0.1", port=0)
    http.start()
    try:
        yield WireServer(http)
    finally:
        http.clear()
        http.stop()
