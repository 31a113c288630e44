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

import base64
import binascii
import hmac
import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_REQUEST_BYTES = 4096
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class CodeServer:
    def __init__(self, host: str, port: int, credentials: tuple[str, str] | None):
        self.credentials = credentials
        self.max_validity: timedelta | None = None
        self.requests = 0
        self._lock = threading.Lock()
        self._codes: dict[str, dict] = {}
        self._failures: list[int] = []
        self._http = ThreadingHTTPServer((host, port), _handler_for(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), name="code-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/api/v1/generate"

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

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

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    # called by the request handler
    def _next_failure(self) -> int | None:
        with self._lock:
            self.requests += 1
            return self._failures.pop(0) if self._failures else None

    def _authorised(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        scheme, _, encoded = (header or "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected_user, expected_password = self.credentials
        return (
            scheme.lower() == "basic"
            and hmac.compare_digest(user.encode(), expected_user.encode())
            and hmac.compare_digest(password.encode(), expected_password.encode())
        )

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
