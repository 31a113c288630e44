"""The professionals' login under attack (fhir_server/web/throttle.py, storage/users.py): the lock-out
of one (account, client) pair, the per-address and per-account throttles (flask-limiter), trusted
browsers that keep the legitimate professional in, the same answer for unknown accounts as for known
ones, the operator's unlock, the settings, and the counters shared through the app's Redis.

Client addresses are set on Flask's test client (documentation ranges, RFC 5737): nothing is sent
anywhere."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest

from fhir_server import create_app
from fhir_server.settings import Settings
from fhir_server.web.__main__ import main as users_command
from fhir_server.web.throttle import device_cookie, storage_uri

from .test_web_ui import PASSWORD, Web, add_user, fresh_code

ATTACKER, OFFICE, ELSEWHERE = "192.0.2.66", "198.51.100.7", "203.0.113.20"
LIMITS = dict(
    web_lockout_limit=3,
    web_lockout_minutes=15,
    web_login_address_rate="12 per minute",
    web_login_account_rate="7 per hour",
)


def settings_for(mongo_uri, tmp_path, **overrides) -> Settings:
    return Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url="http://testserver/fhir",
        var_dir=str(tmp_path / "var"),
        create_indexes=False,
        store_code_lists=False,
        auth_enabled=True,
        audit_flush_interval=0,
        **{**LIMITS, **overrides},
    )


@pytest.fixture
def app(mongo_uri, tmp_path):
    return create_app(settings_for(mongo_uri, tmp_path))


@pytest.fixture
def users(app):
    return app.extensions["sidep.users"]


class Client(Web):
    """A browser at one address."""

    def __init__(self, app, address):
        super().__init__(app)
        self.http.environ_base["REMOTE_ADDR"] = address

    def signed_out(self):
        """The session ended (logout, expiry): the browser keeps its other cookies."""
        self.http.delete_cookie("sidep_session", path="/ui")
        return self

    def fail(self, login, times=1):
        return [self.login(login, password="pas-le-bon", code="123456") for _ in range(times)][-1]


def page(response) -> str:
    """The page without its per-browser CSRF token (what differs between any two browsers)."""
    return re.sub(r'name="csrf_token" value="[^"]+"', "", response.get_data(as_text=True))


def test_a_lockout_blocks_the_attackers_pair_not_the_professional(app, users):
    add_user(users, "bob")
    attacker = Client(app, ATTACKER)
    assert attacker.fail("bob", LIMITS["web_lockout_limit"] - 1).status_code == 401
    locked = attacker.fail("bob")
    assert locked.status_code == 423 and "bloquée pour 15 minutes" in page(locked)
    # locked for that pair even with the right password and code
    assert attacker.login("bob").status_code == 423
    # bob, from another address, with his password and code
    assert Client(app, OFFICE).login("bob").status_code == 302
    # the attacker's other pairs are not locked either
    add_user(users, "carol")
    assert attacker.login("carol").status_code == 302


def test_a_trusted_browser_gets_in_when_everything_else_is_throttled(app, users):
    add_user(users, "dora")
    dora = Client(app, OFFICE)
    assert dora.login("dora").status_code == 302
    assert dora.http.get_cookie(device_cookie("dora"), path="/ui") is not None
    # a distributed attack: few failures per address, many addresses, until the account's rate is spent
    for n in range(int(LIMITS["web_login_account_rate"].split()[0])):
        Client(app, f"192.0.2.{10 + n}").fail("dora")
    from_a_new_browser = Client(app, ELSEWHERE).login("dora")
    assert from_a_new_browser.status_code == 429 and from_a_new_browser.headers.get("Retry-After")
    # dora's browser is exempt: it logs in, from the attacker's own address even (a shared NAT)
    dora.signed_out().http.environ_base["REMOTE_ADDR"] = ATTACKER
    assert dora.login("dora").status_code == 302
    dora.signed_out()
    # and her own mistakes lock her browser only after the lock-out limit, not the rates
    for _ in range(LIMITS["web_lockout_limit"] - 1):
        assert dora.fail("dora").status_code == 401
    assert dora.fail("dora").status_code == 423
    assert users_command(["users", "unlock", "dora"], users) == 0
    assert dora.fail("dora").status_code == 401  # counting afresh


def test_the_device_cookie_is_renewed_and_forgotten_with_the_password(app, users):
    add_user(users, "eve")
    browser = Client(app, OFFICE)
    browser.login("eve")
    first = browser.http.get_cookie(device_cookie("eve"), path="/ui")
    assert first.http_only and first.same_site == "Strict" and first.path == "/ui"
    stored = users.user("eve")["devices"]
    assert [d["k"] for d in stored] == [hashlib.sha256(first.value.encode()).hexdigest()]  # only a hash
    browser.signed_out().login("eve")
    second = browser.http.get_cookie(device_cookie("eve"), path="/ui").value
    assert second != first.value and len(users.user("eve")["devices"]) == 1  # renewed, the old one gone
    assert users.trusts_device("eve", second) and not users.trusts_device("eve", first.value)
    assert not users.trusts_device("someone-else", second)  # a device cookie is for one account
    users.set_password("eve", "un-autre-mot-de-passe")
    assert not users.trusts_device("eve", second)


def test_one_address_trying_many_accounts_is_throttled(app, users):
    add_user(users, "fred")
    sprayer = Client(app, ATTACKER)
    for n in range(12):
        assert sprayer.fail(f"compte-{n}").status_code in (401, 423)
    throttled = sprayer.login("fred")
    assert throttled.status_code == 429 and "Trop de tentatives" in page(throttled)
    assert int(throttled.headers["Retry-After"]) > 0
    # another address is not concerned
    assert Client(app, OFFICE).login("fred").status_code == 302


def test_unknown_accounts_get_the_same_answers_as_known_ones(app, users, monkeypatch):
    add_user(users, "gina")
    import hashlib as stdlib_hashlib

    scrypts = []
    real_scrypt = stdlib_hashlib.scrypt
    monkeypatch.setattr(stdlib_hashlib, "scrypt", lambda *a, **k: scrypts.append(1) or real_scrypt(*a, **k))
    known, unknown = Client(app, OFFICE), Client(app, ELSEWHERE)
    for _attempt in range(LIMITS["web_lockout_limit"]):
        for password in ("pas-le-bon", ""):
            del scrypts[:]
            a = known.login("gina", password=password, code="123456")
            known_cost = len(scrypts)
            del scrypts[:]
            b = unknown.login("nobody-here", password=password, code="123456")
            assert (a.status_code, page(a).replace("gina", "LOGIN")) == (
                b.status_code,
                page(b).replace("nobody-here", "LOGIN"),
            )
            assert set(a.headers.keys()) - {"Set-Cookie"} == set(b.headers.keys()) - {"Set-Cookie"}
            assert len(scrypts) == known_cost  # the same work: one scrypt, or none once locked
    assert a.status_code == 423  # both pairs locked out alike


def test_users_list_shows_locked_accounts(app, users, capsys):
    add_user(users, "hugo")
    Client(app, ATTACKER).fail("hugo", LIMITS["web_lockout_limit"])
    users_command(["users", "list"], users)
    assert "LOCKED(1 client)" in capsys.readouterr().out
    assert users_command(["users", "unlock", "hugo"], users) == 0
    users_command(["users", "list"], users)
    assert "LOCKED" not in capsys.readouterr().out
    assert Client(app, ATTACKER).login("hugo").status_code == 302


def test_counters_are_shared_through_the_apps_redis(mongo_uri, redis_url, tmp_path):
    config = settings_for(mongo_uri, tmp_path, redis_url=redis_url, web_login_address_rate="3 per minute")
    assert storage_uri(config).startswith(("redis://", "redis+unix://"))
    worker_1, worker_2 = create_app(config), create_app(config)  # two web workers, one Redis
    address = f"192.0.2.{uuid.uuid4().int % 200 + 1}"
    for _ in range(3):
        Client(worker_1, address).fail(f"x-{uuid.uuid4().hex[:6]}")
    assert Client(worker_2, address).fail("another").status_code == 429


def test_limits_are_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_LOGIN_ADDRESS_RATE", "5 per minute")
    monkeypatch.setenv("WEB_LOGIN_ACCOUNT_RATE", "9 per hour")
    monkeypatch.setenv("WEB_LOCKOUT_LIMIT", "4")
    monkeypatch.setenv("WEB_LOCKOUT_MINUTES", "30")
    monkeypatch.setenv("WEB_TRUSTED_DEVICE_DAYS", "30")
    monkeypatch.setenv("WEB_TRUSTED_DEVICES", "3")
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    settings = Settings.from_env()
    assert (
        settings.web_login_address_rate,
        settings.web_login_account_rate,
        settings.web_lockout_limit,
        settings.web_lockout_minutes,
        settings.web_trusted_device_days,
        settings.web_trusted_devices,
        settings.trusted_proxies,
    ) == ("5 per minute", "9 per hour", 4, 30, 30, 3, 1)
    assert storage_uri(settings.but(redis_url=None)) == "memory://"
    assert storage_uri(settings.but(redis_url="unix:///tmp/r.sock")) == "redis+unix:///tmp/r.sock"


def test_behind_a_proxy_the_forwarded_address_is_the_client(mongo_uri, tmp_path):
    app = create_app(settings_for(mongo_uri, tmp_path, trusted_proxies=1, web_lockout_limit=2))
    add_user(app.extensions["sidep.users"], "ines")
    proxy = Client(app, "127.0.0.1")
    proxy.http.environ_base["HTTP_X_FORWARDED_FOR"] = ATTACKER
    proxy.fail("ines", 2)
    assert proxy.login("ines").status_code == 423
    other = Client(app, "127.0.0.1")  # the same proxy, another client behind it
    other.http.environ_base["HTTP_X_FORWARDED_FOR"] = OFFICE
    assert (
        other.login("ines", password=PASSWORD, code=fresh_code(app.extensions["sidep.users"], "ines")).status_code
        == 302
    )


def test_an_account_keeps_its_latest_trusted_browsers_for_their_lifetime(app, users):
    from datetime import timedelta

    add_user(users, "jade")
    month = timedelta(days=app.config["SETTINGS"].web_trusted_device_days)
    for token in ("browser-1", "browser-2", "browser-3"):
        users.trust_device("jade", token, None, month, keep=2)
    assert [users.trusts_device("jade", t) for t in ("browser-1", "browser-2", "browser-3")] == [False, True, True]
    users.trust_device("jade", "browser-4", "browser-3", timedelta(seconds=-1), keep=2)  # renewed, already expired
    assert not users.trusts_device("jade", "browser-3") and not users.trusts_device("jade", "browser-4")
    users.set_active("jade", False)
    assert not users.trusts_device("jade", "browser-2")  # a disabled account trusts no browser
