"""Throttling of the professionals' login, after OWASP's authentication guidance ("Slow Down Online
Guessing Attacks with Device Cookies"): an attacker must not guess passwords fast, and must not be
able to keep a professional out by failing on their account.

- A *trusted browser* is one that logged in to the account before: it holds that account's device
  cookie (`sidep_device_<hash of the login>`, HttpOnly, path /ui, renewed at each login; only its
  hash is stored, storage/users.py). Its attempts are exempt from both throttles below, and its
  failures lock out that browser alone.
- Any other client is known by its address (TRUSTED_PROXIES says how many reverse proxies'
  X-Forwarded-For to believe):
  - per address, every login attempt, whatever the account (WEB_LOGIN_ADDRESS_RATE): no address
    tries passwords on many accounts fast;
  - per account, the failed logins of its untrusted clients from all addresses together
    (WEB_LOGIN_ACCOUNT_RATE): a botnet gets no more guesses on one account than that;
  - the lock-out counts consecutive failures per (account, address) pair (WEB_LOCKOUT_LIMIT,
    WEB_LOCKOUT_MINUTES) and locks that pair only.
  So someone failing on a professional's account, however often and from however many addresses,
  locks out only his own clients; the professional still logs in with their password and TOTP code
  from a browser they used before, and from any other address while the per-account rate is not
  spent (its window is bounded; an operator's `users unlock` clears the lock-outs).
- Every answer is the same for an unknown login as for a known one with a wrong password: the
  counts, the lock-out and the throttles are keyed on a hash of the login typed, whether or not an
  account has it, and both cost one scrypt.

Counters live in the app's Redis (REDIS_URL) when configured, so that every web worker shares them;
otherwise in memory (one process, tests).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app, g, request
from flask_limiter import Limiter

from ..settings import Settings
from ..storage.users import Lockout, Users, account_key
from .session import PATH, secure_cookies

DEVICE_COOKIE_PREFIX = "sidep_device_"


def storage_uri(settings: Settings) -> str:
    """flask-limiter's storage: the app's Redis (redis-py's unix:// is limits' redis+unix://)."""
    url = settings.redis_url
    if not url:
        return "memory://"
    return "redis+unix://" + url[len("unix://") :] if url.startswith("unix://") else url


def install(app, settings: Settings) -> Limiter:
    if settings.trusted_proxies > 0:  # the client address behind reverse proxies, for the whole app
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)
    limiter = Limiter(
        key_func=_address_key,
        app=app,
        storage_uri=storage_uri(settings),
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="sidep",
    )
    app.extensions["sidep.login_limiter"] = limiter
    return limiter


def limited(limiter: Limiter, settings: Settings, view):
    """The login view with its two throttles (on POST, for untrusted clients)."""
    view = limiter.limit(
        settings.web_login_account_rate,
        key_func=_account_key,
        scope="login-account",
        methods=["POST"],
        exempt_when=trusted_device,
        deduct_when=_failed,
    )(view)
    return limiter.limit(
        settings.web_login_address_rate,
        key_func=_address_key,
        scope="login-address",
        methods=["POST"],
        exempt_when=trusted_device,
    )(view)


def lockout() -> Lockout:
    settings = current_app.config["SETTINGS"]
    return Lockout(settings.web_lockout_limit, timedelta(minutes=settings.web_lockout_minutes))


def users() -> Users:
    return current_app.extensions["sidep.users"]


def typed_login() -> str:
    return request.form.get("login", "").strip()


def device_cookie(login: str) -> str:
    return DEVICE_COOKIE_PREFIX + hashlib.sha256(login.encode()).hexdigest()[:16]


def trusted_device() -> bool:
    """Whether this browser holds a device cookie of the account it is logging in to."""
    if "trusted_device" not in g:
        login = typed_login()
        g.trusted_device = users().trusts_device(login, request.cookies.get(device_cookie(login), ""))
    return g.trusted_device


def client() -> str:
    """What the lock-out counts failures on: the trusted browser, or else the client address."""
    login = typed_login()
    if trusted_device():
        return "device:" + hashlib.sha256(request.cookies[device_cookie(login)].encode()).hexdigest()
    return "address:" + (request.remote_addr or "")


def failed_login() -> None:
    """Called by the view when a login is refused: the per-account throttle counts it."""
    g.login_failed = True


def _failed(_response) -> bool:
    return bool(g.get("login_failed"))


def remember_device(response, login: str) -> None:
    """After a successful login: this browser is trusted for this account (a new cookie each time)."""
    settings = current_app.config["SETTINGS"]
    name, token = device_cookie(login), secrets.token_urlsafe(32)
    lifetime = timedelta(days=settings.web_trusted_device_days)
    users().trust_device(login, token, request.cookies.get(name), lifetime, settings.web_trusted_devices)
    response.set_cookie(
        name,
        token,
        max_age=int(lifetime.total_seconds()),
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(),
    )


def _address_key() -> str:
    return hashlib.sha256(f"address\x00{request.remote_addr or ''}".encode()).hexdigest()


def _account_key() -> str:
    return account_key(typed_login())
