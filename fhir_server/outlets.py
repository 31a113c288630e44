"""Real local receivers for what the platform sends: an HTTP SMS gateway, an SMTP server and a
Subscription's rest-hook endpoint (`start_hook_receiver`).

The embedded default (`make run`) has no operator's SMS gateway and no mail relay: it starts these,
and what patients and laboratories would receive is written under VAR_DIR for a developer to
read. Tests start them too, with knobs a real gateway turns by itself (slow answers, failures,
required credentials). Files hold phone numbers and addresses (synthetic, still personal in
shape): mode 0600 in a 0700 directory.

- `start_sms_gateway`: the protocol of `workers.channels.sms` (POST JSON `from`, `to`, `text`,
  header `Idempotency-Key`), over a threaded `http.server`. A repeated key is answered 200 with
  the first answer's id and not received again, as an operator's gateway does.
- `start_smtp`: aiosmtpd's threaded Controller, plain, STARTTLS or implicit TLS, with AUTH when
  credentials are given; each message is parsed into an `EmailMessage`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import json
import logging
import os
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from fhir_server.embedded import free_port

MAX_SMS_REQUEST_BYTES = 64 * 1024  # a gateway request is a few hundred bytes; more is not one


def _private_directory(directory: str | Path | None) -> Path | None:
    if directory is None:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner alone (never through a umask-wide window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _file_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S%f")


# -- SMS gateway ------------------------------------------------------------------------------------
@dataclass
class Sms:
    id: str
    key: str
    to: str
    sender: str
    text: str
    received: datetime

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "key": self.key,
            "to": self.to,
            "from": self.sender,
            "text": self.text,
            "received": self.received.isoformat(),
        }


class LocalHttpServer:
    """A threaded HTTP server on a local port playing an outside service for the platform (the SMS
    gateway here, the submission-code server of fhir_server/code_server.py): its address, HTTP
    basic credentials when given, requests counted, failures on demand (`fail_next`)."""

    name = "local-http"
    path = "/"

    def __init__(self, host: str, port: int, credentials: tuple[str, str] | None, handler):
        self.credentials = credentials
        self.requests = 0
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), name=self.name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

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
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected_user, expected_password = self.credentials
        return _same(user, expected_user) & _same(password, expected_password)


class SmsGatewayServer(LocalHttpServer):
    """A running gateway. `.delay` seconds are waited after a message is recorded and before the
    answer (a send the gateway accepted but whose answer the client gave up on); `.fail_next`
    makes the next requests fail before anything is recorded."""

    name = "sms-gateway"
    path = "/sms"

    def __init__(self, directory: Path | None, host: str, port: int, credentials: tuple[str, str] | None):
        self.directory = directory
        self.delay = 0.0
        self._by_key: dict[str, Sms] = {}
        super().__init__(host, port, credentials, _handler_for(self))

    def messages(self) -> list[dict]:
        """The messages accepted, once each, in arrival order, as their files hold them: `id`,
        `key`, `to`, `from`, `text`, `received` (ISO 8601, UTC)."""
        with self._lock:
            return [sms.as_json() for sms in self._by_key.values()]

    def _accept(self, key: str, to: str, sender: str, text: str) -> tuple[Sms, bool]:
        """The message for `key`, and whether it is new."""
        with self._lock:
            known = self._by_key.get(key)
            if known is not None:
                return known, False
            sms = Sms(f"sms-{uuid.uuid4().hex}", key, to, sender, text, datetime.now(UTC))
            self._by_key[key] = sms
        if self.directory is not None:
            path = self.directory / f"sms-{_file_stamp(sms.received)}-{sms.id}.json"
            _write_private(path, json.dumps(sms.as_json(), ensure_ascii=False, indent=2).encode())
        return sms, True


def _same(given: str | bytes, expected: str) -> bool:
    """Compared in constant time (a test gateway, but the habit costs nothing)."""
    given = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(given, expected.encode())


def _handler_for(gateway: SmsGatewayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            failure = gateway._next_failure()
            if failure is not None:
                return self._answer(failure, {"error": "failure requested by the test"})
            if not gateway._authorised(self.headers.get("Authorization")):
                return self._answer(401, {"error": "credentials required"}, {"WWW-Authenticate": 'Basic realm="sms"'})
            fields = self._fields()
            if isinstance(fields, str):
                return self._answer(400, {"error": fields})
            sms, new = gateway._accept(*fields)
            if new and gateway.delay:
                time.sleep(gateway.delay)
            self._answer(201 if new else 200, {"id": sms.id})

        def _fields(self) -> tuple[str, str, str, str] | str:
            """(key, to, from, text), or what is wrong with the request."""
            key = self.headers.get("Idempotency-Key")
            if not key:
                return "Idempotency-Key header required"
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return "bad Content-Length"
            if not 0 < length <= MAX_SMS_REQUEST_BYTES:
                return "body required, at most 64 KiB"
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                return "body is not JSON"
            values = tuple(body.get(name) if isinstance(body, dict) else None for name in ("to", "from", "text"))
            if not all(isinstance(value, str) and value for value in values):
                return "to, from and text required, as strings"
            return (key, *values)

        def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if status >= 400:  # the body may be unread: this connection cannot carry another request
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the `delay` knob): the message stays received

        def log_message(self, format, *args) -> None:
            pass  # no request lines on the console: the gateway's files are the record

    return Handler


def start_sms_gateway(
    directory: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    credentials: tuple[str, str] | None = None,
) -> SmsGatewayServer:
    """A gateway listening on `host:port` (0: a free port); `credentials` (user, password) makes
    basic auth required."""
    return SmsGatewayServer(_private_directory(directory), host, port, credentials)


# -- Subscription receiver ----------------------------------------------------------------------
MAX_HOOK_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass
class Hook:
    """One request a Subscription's endpoint accepted."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received: datetime

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


class HookReceiver(LocalHttpServer):
    """A rest-hook endpoint: keeps every request it accepts (any method, any path under `/hook`),
    in arrival order. `.failing` (an HTTP status) refuses every request until set back to None,
    `.fail_next` the next ones; `.delay` seconds are waited after a request is kept and before the
    answer (a delivery received whose sender dies before it hears back)."""

    name = "hook-receiver"
    path = "/hook"

    def __init__(self, host: str, port: int):
        self.failing: int | None = None
        self.delay = 0.0
        self._hooks: list[Hook] = []
        super().__init__(host, port, None, _hook_handler_for(self))

    def hooks(self) -> list[Hook]:
        with self._lock:
            return list(self._hooks)

    def _refusal(self) -> int | None:
        failure = self._next_failure()
        return failure if failure is not None else self.failing

    def _keep(self, hook: Hook) -> None:
        with self._lock:
            self._hooks.append(hook)


def _hook_handler_for(receiver: HookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_HOOK_REQUEST_BYTES:
                return self._answer(400)
            body = self.rfile.read(length) if length else b""
            refusal = receiver._refusal()
            if refusal is not None:
                return self._answer(refusal)
            headers = {key: value for key, value in self.headers.items()}
            receiver._keep(Hook(self.command, self.path, headers, body, datetime.now(UTC)))
            if receiver.delay:
                time.sleep(receiver.delay)
            self._answer(200)

        do_POST = do_PUT = do_DELETE = _any

        def _answer(self, status: int) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up (or died): what was kept stays kept

        def log_message(self, format, *args) -> None:
            pass

    return Handler


def start_hook_receiver(host: str = "127.0.0.1", port: int = 0) -> HookReceiver:
    """A Subscription endpoint listening on `host:port` (0: a free port), at `.url`."""
    return HookReceiver(host, port)


# -- SMTP -------------------------------------------------------------------------------------------
@dataclass
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    received: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Handler:
    def __init__(self, catcher: SmtpCatcher):
        self.catcher = catcher

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        code = self.catcher.refused.get(address.lower())
        if code is not None:
            return f"{code} {'5' if code >= 500 else '4'}.1.1 recipient refused"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.catcher._receive(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        return "250 Message accepted for delivery"


class SmtpCatcher:
    """A running SMTP server; `.deliveries` keeps each message's envelope too."""

    def __init__(self, directory: Path | None, controller_options: dict, host: str, port: int):
        self.directory = directory
        self.refused: dict[str, int] = {}
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self.host = host
        self._controller = _started_controller(_Handler(self), host, port, controller_options)
        self.port = self._controller.port

    def refuse(self, address: str, code: int = 550) -> None:
        """Refuse RCPT TO `address` with `code` (5xx: for good, 4xx: for now)."""
        self.refused[address.lower()] = code

    def messages(self) -> list[EmailMessage]:
        """Every message received, in arrival order (a message sent twice is here twice)."""
        with self._lock:
            return [delivery.message for delivery in self.deliveries]

    def unique(self) -> list[EmailMessage]:
        """The messages received, once per Message-ID (a message without one counts each time)."""
        seen: set[str] = set()
        unique = []
        for message in self.messages():
            message_id = message.get("Message-ID")
            if message_id is None or message_id not in seen:
                unique.append(message)
            if message_id is not None:
                seen.add(message_id)
        return unique

    def stop(self) -> None:
        self._controller.stop()

    def _receive(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        message = BytesParser(policy=policy.default).parsebytes(content)
        delivery = Delivery(mail_from, rcpt_tos, message)  # type: ignore[arg-type]
        with self._lock:
            self.deliveries.append(delivery)
        if self.directory is not None:
            path = self.directory / f"mail-{_file_stamp(delivery.received)}-{uuid.uuid4().hex[:8]}.eml"
            _write_private(path, content)


class _Controller(Controller):
    """aiosmtpd counts only STARTTLS as TLS for `auth_require_tls`: over implicit TLS the
    connection is encrypted from the first byte, so AUTH is offered there too."""

    def __init__(self, *args, implicit_tls: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.implicit_tls = implicit_tls

    def factory(self):
        smtp = super().factory()
        if self.implicit_tls:
            smtp._auth_require_tls = False
        return smtp


def _started_controller(handler: _Handler, host: str, port: int, options: dict) -> Controller:
    """aiosmtpd needs a port it can name before binding (it connects to it to start the server):
    port 0 means trying free ports until one binds."""
    for _ in range(5):
        controller = _Controller(handler, hostname=host, port=port or free_port(), **options)
        try:
            controller.start()
            return controller
        except OSError as error:
            if port or error.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free port for the SMTP server")


def _authenticator(user: str, password: str):
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        good = _same(auth_data.login, user) & _same(auth_data.password, password)
        return AuthResult(success=good, handled=False)  # not handled: aiosmtpd answers 535 itself

    return authenticate


def start_smtp(
    directory: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: str | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    auth: tuple[str, str] | None = None,
    client_cafile: str | Path | None = None,
) -> SmtpCatcher:
    """An SMTP server on `host:port` (0: a free port). `tls`: None (plain), "starttls" (required
    before MAIL) or "implicit" (TLS from the first byte, as on port 465), with `certfile` and
    `keyfile`; `client_cafile` requires a client certificate that CA issued; `auth` (user,
    password) requires AUTH, offered only over TLS."""
    if tls not in (None, "starttls", "implicit"):
        raise ValueError(f"tls {tls!r} is not None, 'starttls' or 'implicit'")
    # aiosmtpd logs each command line at INFO: recipients' addresses and AUTH exchanges
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    options: dict = {}
    if tls is not None:
        if not certfile:
            raise ValueError("TLS needs a certificate file")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        if client_cafile:  # mutual TLS, as the MSSanté relays ask: a client certificate this CA issued
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(client_cafile))
        options.update(
            {"ssl_context": context} if tls == "implicit" else {"tls_context": context, "require_starttls": True}
        )
    if auth is not None:
        options.update(authenticator=_authenticator(*auth), auth_required=True, implicit_tls=tls == "implicit")
    return SmtpCatcher(_private_directory(directory), options, host, port)
