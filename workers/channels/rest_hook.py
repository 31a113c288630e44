"""The rest-hook channel: one HTTP request to a subscriber's endpoint, its headers and signature.

`X-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Event-Id>.<X-Timestamp>." + body)>` when the
Subscription has a secret; `send` answers None for a 2xx, else a reason that names no URL and no
header value (it is shown to operators and stored on the Subscription's `error`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from urllib.parse import urlsplit, urlunsplit

import requests

from fhir_server.settings import Settings

FHIR_JSON = "application/fhir+json"


class Outgoing:
    """One HTTP request to a subscriber's endpoint."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes, owners: list[str] | None):
        self.method, self.url, self.headers, self.body, self.owners = method, url, headers, body, owners


def channel_headers(channel: dict) -> dict[str, str]:
    headers = {}
    for line in channel.get("header") or []:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers


def sign(headers: dict[str, str], secret: str | None, event: str, body: bytes) -> None:
    """`X-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Event-Id>.<X-Timestamp>." + body)>`."""
    stamp = str(int(time.time()))
    headers["X-Timestamp"] = stamp
    if secret:
        digest = hmac.new(secret.encode(), f"{event}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        headers["X-Signature"] = f"sha256={digest}"


def resource_url(endpoint: str, rtype: str, rid: str) -> str:
    """{endpoint}/{Type}/{id}, the endpoint's query string kept after the path."""
    url = urlsplit(endpoint)
    return urlunsplit((url.scheme, url.netloc, f"{url.path.rstrip('/')}/{rtype}/{rid}", url.query, ""))


_sessions: dict[int, requests.Session] = {}


def send(settings: Settings, outgoing: Outgoing) -> str | None:
    """None when the endpoint answered 2xx, else the reason (no URL, no header value)."""
    session = _sessions.get(os.getpid())
    if session is None:
        session = _sessions[os.getpid()] = requests.Session()
    try:
        response = session.request(
            outgoing.method,
            outgoing.url,
            headers=outgoing.headers,
            data=outgoing.body,
            timeout=settings.subscription_timeout_seconds,
            allow_redirects=False,
        )
    except requests.Timeout:
        return "délai de réponse dépassé"
    except requests.RequestException as exc:
        return f"connexion impossible ({type(exc).__name__})"
    response.close()
    return None if 200 <= response.status_code < 300 else f"réponse HTTP {response.status_code}"
