"""Nothing personal or secret in any log.

One rule, `redact_target`, says what of a request's target (path and query) a log may show; every
logger that writes one uses it: gunicorn's access and error logs (`GunicornLogger`, configured by
fhir_server/gunicorn_config.py), werkzeug's development server, the application's own messages.

- Query strings: parameter names are kept, every value becomes `*`
  (`/fhir/Patient?identifier=*&family=*`): searches carry NIRs, names, e-mail addresses.
- Paths: a path is matched against the application's routes; the values of the route variables that
  name a resource type, a resource or job id, an operation or a static file are kept, any other
  variable (a token in a URL, say) becomes `*`; a path no route matches keeps its first segment only.

`RedactingFilter` applies it to every log record, plus what a rule cannot know in advance:
exception messages are withheld (they quote input: a validation error repeats the value it refused)
except for the exception types of `SAFE_EXCEPTIONS`, and e-mail addresses, NIR-shaped numbers, phone
numbers and bearer tokens that still appear in a message are masked. `install_filter()` runs it on
every record of the process (records are redacted as they are made, so handlers that other libraries
add later, RQ's or werkzeug's, get only redacted records); the app factory, the RQ worker class
(workers.Worker) and the gunicorn logger call it.
"""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import urlsplit

from gunicorn.glogging import Logger as _GunicornBaseLogger

REDACTED = "*"
# route variables whose values are identifiers, never personal data (see fhir_server/routes.py,
# fhir_server/web/views.py and Flask's static routes)
PUBLIC_PATH_VARIABLES = frozenset({"rtype", "rid", "vid", "name", "report_id", "job_id", "event_id", "filename"})
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_ROUTE_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
_url_map = None  # the application's werkzeug Map, set by install(app)


def redact_query(query: str) -> str:
    """`identifier=x&family=y` -> `identifier=*&family=*`; a part without `=` or whose name does not
    look like a parameter name is a value itself, and becomes `*`."""
    parts = []
    for part in query.split("&"):
        if not part:
            continue
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if equals and _PARAMETER_NAME.match(name) else REDACTED)
    return "&".join(parts)


def redact_path(path: str, method: str = "GET") -> str:
    """The path as its route shows it, with the values of non-public route variables redacted."""
    matched = _match(path, method)
    if matched is None:
        segments = path.split("/")
        if len(segments) <= 2:
            return path
        return "/".join(segments[:2] + [REDACTED for _ in segments[2:]])
    rule, values = matched
    if not rule.arguments:
        return path

    def value(variable: re.Match) -> str:
        name = variable.group(1)
        return str(values.get(name, REDACTED)) if name in PUBLIC_PATH_VARIABLES else REDACTED

    return _ROUTE_VARIABLE.sub(value, rule.rule)


def redact_target(target: str, method: str = "GET") -> str:
    """THE rule for what a log shows of a request target: `path[?query]` or an absolute URL."""
    parts = urlsplit(target)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    redacted = origin + (redact_path(parts.path, method) if parts.path else "")
    if parts.query:
        redacted += "?" + redact_query(parts.query)
    return redacted


def _match(path: str, method: str):
    if _url_map is None:
        return None
    from werkzeug.exceptions import MethodNotAllowed

    adapter = _url_map.bind("localhost")
    try:
        return adapter.match(path, method=method, return_rule=True)
    except MethodNotAllowed as refused:
        if refused.valid_methods:
            try:
                return adapter.match(path, method=refused.valid_methods[0], return_rule=True)
            except Exception:  # noqa: BLE001 - an unmatched path is redacted by the fallback
                return None
        return None
    except Exception:  # noqa: BLE001 - not found, a redirect: the fallback redacts it
        return None


# -- messages --------------------------------------------------------------------------------------
HTTP_METHODS = "GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS"
_REQUEST_LINE = re.compile(rf"\b({HTTP_METHODS}) (\S+)")
# terminal colours (werkzeug's development server colours every request line but a 200's): they
# would glue the method to a word before it, hiding the request line from the rule
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_URL = re.compile(r"\bhttps?://[^\s\"'<>]+")
_QUERY_IN_TOKEN = re.compile(r"(?<![\w?])(/[^\s\"'<>?]*)\?([^\s\"'<>]+)")
# what may still hide in a message (a job's arguments, a mail server's refusal), masked wherever it is
_PERSONAL = (
    (re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"), REDACTED),  # e-mail addresses
    (re.compile(r"(?<![\w.])[12]\d{4}(?:2[AB]|\d{2})\d{6}(?:\d{2})?(?![\w.])", re.IGNORECASE), REDACTED),  # NIR
    (re.compile(r"(?<![\w+])\+\d{8,15}(?!\w)"), REDACTED),  # E.164 phone numbers
    (re.compile(r"(?<![\w.])0[1-9](?:[ .-]?\d{2}){4}(?![\w.])"), REDACTED),  # French national phone numbers
    (re.compile(r"\b(Bearer|Basic)\s+[\w.~+/=-]+", re.IGNORECASE), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"\b(\w*(?:secret|password|passwd|token|totp)\w*)([\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+", re.IGNORECASE
        ),
        rf"\1\2{REDACTED}",
    ),
)


def redact_message(message: str) -> str:
    message = _ANSI_ESCAPE.sub("", message)
    message = _REQUEST_LINE.sub(lambda m: f"{m.group(1)} {redact_target(m.group(2), m.group(1))}", message)
    message = _URL.sub(lambda m: redact_target(m.group(0)), message)
    message = _QUERY_IN_TOKEN.sub(lambda m: f"{m.group(1)}?{redact_query(m.group(2))}", message)
    for pattern, replacement in _PERSONAL:
        message = pattern.sub(replacement, message)
    return message


def _safe_exception_types() -> tuple[type, ...]:
    """Exceptions whose message says where something failed, never what a request carried."""
    safe: list[type] = [OSError, TimeoutError]
    try:
        from pymongo.errors import ConnectionFailure

        safe.append(ConnectionFailure)
    except ImportError:  # pragma: no cover
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeout

        safe += [RedisConnectionError, RedisTimeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(safe)


SAFE_EXCEPTIONS = _safe_exception_types()


def exception_summary(error: BaseException) -> str:
    """A traceback without exception messages (kept only for SAFE_EXCEPTIONS) and without locals:
    enough to find the fault, nothing of the data that caused it."""
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines = []
    for index, exc in enumerate(reversed(chain)):
        if index:
            lines.append("\nwhile handling it, another exception:\n")
        lines.append("Traceback (most recent call last; exception messages withheld):\n")
        lines.extend(traceback.StackSummary.from_list(traceback.extract_tb(exc.__traceback__)).format())
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        lines.append(f"{kind}: {redact_message(str(exc))}" if isinstance(exc, SAFE_EXCEPTIONS) else kind)
    return "".join(lines).rstrip()


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its message (arguments merged in) and its exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_sidep_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: show the template only
            message = str(record.msg)
        record.msg, record.args = redact_message(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = exception_summary(record.exc_info[1])
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_message(record.exc_text)
        record._sidep_redacted = True
        return True


_FILTER = RedactingFilter()


def install_filter() -> None:
    """Every record made in this process from now on is redacted (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_sidep_redacting", False):
        return

    def redacted_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        _FILTER.filter(record)
        return record

    redacted_record._sidep_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)
    for handler in logging.getLogger().handlers:  # records made before, still queued somewhere
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def install(app) -> None:
    """Called by the app factory: redact every record, and know the app's routes for paths."""
    global _url_map
    install_filter()
    _url_map = app.url_map


# -- gunicorn ----------------------------------------------------------------------------------------
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})


class GunicornLogger(_GunicornBaseLogger):
    """Gunicorn's logger with the request line, path, query and referer redacted by `redact_target`,
    secret headers and the WSGI environ never shown, and every record through RedactingFilter."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        install_filter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if _FILTER not in handler.filters:
                    handler.addFilter(_FILTER)

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        method = environ.get("REQUEST_METHOD", "-")
        path = redact_path(environ.get("PATH_INFO") or "/", method)
        query = redact_query(environ.get("QUERY_STRING") or "")
        atoms.update(
            {
                "r": f"{method} {path}{'?' + query if query else ''} {environ.get('SERVER_PROTOCOL', '')}".rstrip(),
                "U": path,
                "q": query,
                "u": "-",
                "f": redact_target(environ["HTTP_REFERER"]) if environ.get("HTTP_REFERER") else "-",
            }
        )
        for key in list(atoms):
            if key.startswith("{") and (key.endswith("}e") or key[1:-2] in _SECRET_HEADERS):
                atoms[key] = REDACTED
        return atoms
