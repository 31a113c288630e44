"""A real local submission-code server, speaking the protocol of
`fhir_server.declaration_codes.HttpCodeProvider` (as TousAntiCovid's own served SI-DEP), for the
tests and for a developer who wants to run the platform against an external provider.

`start_code_server(credentials=None)` starts it on a free local port (threaded `http.server`);
`.url` is its address. `POST` JSON `{"validUntil": "<ISO 8601>"}` is answered 201
`{"code", "validUntil"}` with a fresh 12-character code, never the same twice; `.max_validity`
caps the expiry it gives (a server that grants less than asked); `.fail_next(status)` makes the
next requests fail; `.codes()` lists what it gave; `.verify(code)` redeems one, as the app would.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

from .outlets import LocalHttpServer

MAX_REQUEST_BYTES = 4096
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class CodeServer(LocalHttpServer):
    name = "code-server"
    path = "/api/v1/generate"

    def __init__(self, host: str, port: int, credentials: tuple[str, str] | None):
        self.max_validity: timedelta | None = None
        self._codes: dict[str, dict] = {}
        super().__init__(host, port, credentials, _handler_for(self))

    def codes(self) -> list[str]:
        with self._lock:
            return list(self._codes)

    def verify(self, code: str) -> bool:
        """Redeem a code once (what the app's declaration does)."""
        with self._lock:
            entry = self._codes.get(code)
            if entry is None or entry["used"] or entry["validUntil"] <= datetime.now(UTC):
                return False
            entry["used"] = True
            return True

    def _issue(self, asked: datetime) -> dict:
        until = asked if self.max_validity is None else min(asked, datetime.now(UTC) + self.max_validity)
        with self._lock:
            while True:
                code = "".join(secrets.choice(ALPHABET) for _ in range(12))
                if code not in self._codes:
                    break
            self._codes[code] = {"validUntil": until, "used": False}
        return {"code": code, "validUntil": until.isoformat().replace("+00:00", "Z")}


def _handler_for(server: CodeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            failure = server._next_failure()
            if failure is not None:
                return self._answer(failure, {"error": "failure requested by the test"})
            if not server._authorised(self.headers.get("Authorization")):
                return self._answer(401, {"error": "credentials required"}, {"WWW-Authenticate": 'Basic realm="codes"'})
            asked = self._valid_until()
            if isinstance(asked, str):
                return self._answer(400, {"error": asked})
            self._answer(201, server._issue(asked))

        def _valid_until(self) -> datetime | str:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return "bad Content-Length"
            if not 0 < length <= MAX_REQUEST_BYTES:
                return "body required, at most 4 KiB"
            try:
                body = json.loads(self.rfile.read(length))
                until = datetime.fromisoformat(body["validUntil"].replace("Z", "+00:00"))
            except (ValueError, TypeError, KeyError, AttributeError):
                return "validUntil (ISO 8601 instant) required"
            if until.tzinfo is None:
                return "validUntil needs a time zone"
            return until.astimezone(UTC)

        def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if status >= 400:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args) -> None:
            pass  # codes are secrets of the patients they go to: no request lines

    return Handler


def start_code_server(host: str = "127.0.0.1", port: int = 0, credentials: tuple[str, str] | None = None) -> CodeServer:
    return CodeServer(host, port, credentials)
