"""Shared fixtures: one real embedded database server (SecantusDB) per test session, one database
per test (isolation by name), real HTTP servers where a client library needs a socket."""

from __future__ import annotations

import threading
import uuid

import pytest
from werkzeug.serving import make_server

from fhir_server import create_app
from fhir_server.embedded import free_port, start_mongo, start_redis
from fhir_server.settings import Settings

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    server = start_mongo(tmp_path_factory.mktemp("secantusdb"))
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def recorder():
    """The filters a process sends (tests/planner.py Commands): one listener per test process,
    since pymongo cannot unregister one; only clients made after it see it, so a test that
    records gives its server a client URI of its own."""
    from pymongo import monitoring

    from .planner import Commands

    listener = Commands()
    monitoring.register(listener)
    return listener


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def settings(mongo_uri, tmp_path) -> Settings:
    """A fresh database per test. Indexes are skipped (they cost ~0.5 s a database and change no
    result); tests about indexes use `indexed_settings`."""
    return Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url="http://testserver/fhir",
        var_dir=str(tmp_path / "var"),
        create_indexes=False,
        enforce_profiles=False,
        store_code_lists=False,
        auth_enabled=False,
    )


@pytest.fixture
def app(settings):
    return create_app(settings)


class FhirClient:
    """Flask's test client with FHIR JSON defaults."""

    def __init__(self, flask_client):
        self.http = flask_client

    def _call(self, method, url, json=None, headers=None, **kwargs):
        headers = {"Accept": FHIR_JSON, **(headers or {})}
        if json is not None:
            headers.setdefault("Content-Type", FHIR_JSON)
            import orjson

            kwargs["data"] = orjson.dumps(json)
        return self.http.open(url, method=method, headers=headers, **kwargs)

    def get(self, url, **kw):
        return self._call("GET", url, **kw)

    def post(self, url, json=None, **kw):
        return self._call("POST", url, json=json, **kw)

    def put(self, url, json=None, **kw):
        return self._call("PUT", url, json=json, **kw)

    def delete(self, url, **kw):
        return self._call("DELETE", url, **kw)

    def create(self, resource: dict) -> dict:
        response = self.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()


@pytest.fixture
def client(app) -> FhirClient:
    return FhirClient(app.test_client())


@pytest.fixture
def live_server(mongo_uri, tmp_path):
    """The app on a real socket (threaded), for HTTP client libraries and concurrency tests."""
    port = free_port()
    config = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=str(tmp_path / "var"),
        create_indexes=False,
        enforce_profiles=False,
        store_code_lists=False,
        auth_enabled=False,
    )
    server = make_server("127.0.0.1", port, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield config.base_url
    server.shutdown()


# -- OAuth2, authorisation and audit on -----------------------------------------------------------
class SecuredServer:
    """An app with auth on, served on a real socket: the token endpoint is called over HTTP."""

    def __init__(self, app, config: Settings):
        self.app = app
        self.settings = config
        self.base_url = config.base_url
        self.token_url = config.token_endpoint
        self.accounts = app.extensions["sidep.accounts"]
        self.store = app.extensions["sidep.store"]

    def register(self, lab=None, scope="system/*.read system/*.write", role="laboratory", jwks=None, name="LIS"):
        """(client_id, secret) of a new client bound to `lab` (a synthetic Laboratory)."""
        doc, secret = self.accounts.register_client(
            name,
            lab.finess if lab else None,
            [s.finess for s in lab.sites] if lab else [],
            scope,
            role,
            jwks,
            lab.name if lab else None,
        )
        return doc["_id"], secret

    def token_response(self, client_id, secret, scope=None, basic=False):
        import requests

        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        if basic:
            return requests.post(self.token_url, data=data, auth=(client_id, secret), timeout=30)
        return requests.post(self.token_url, data={**data, "client_id": client_id, "client_secret": secret}, timeout=30)

    def token(self, client_id, secret, scope=None) -> str:
        response = self.token_response(client_id, secret, scope)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def session(self, token: str | None):
        """A requests session speaking FHIR JSON with this bearer token, URLs relative to /fhir."""
        import requests

        base = self.base_url

        class Session(requests.Session):
            def request(self, method, url, *args, **kwargs):
                if not url.startswith("http"):
                    url = base + ("" if url.startswith("/") or not url else "/") + url
                return super().request(method, url, *args, **kwargs)

        session = Session()
        session.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def client_session(self, lab=None, scope="system/*.read system/*.write", role="laboratory"):
        client_id, secret = self.register(lab, scope, role)
        session = self.session(self.token(client_id, secret))
        session.client_id = client_id
        return session

    def audit_events(self, query: dict | None = None) -> list[dict]:
        log = self.app.extensions.get("sidep.audit")
        if log is not None:
            log.flush()
        return [d["res"] for d in self.store.db["AuditEvent"].find(query or {}).sort("ts", 1)]


@pytest.fixture
def secured_factory(mongo_uri, tmp_path):
    """Start secured servers with settings overrides (e.g. token_lifetime=1); all stopped at the end."""
    servers = []

    def start(**overrides) -> SecuredServer:
        port = free_port()
        config = Settings(
            mongodb_uri=mongo_uri,
            mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
            base_url=f"http://127.0.0.1:{port}/fhir",
            var_dir=str(tmp_path / "var"),
            create_indexes=False,
            enforce_profiles=False,
            store_code_lists=False,
            auth_enabled=True,
            audit_flush_interval=0,
        ).but(**overrides)
        app = create_app(config)
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return SecuredServer(app, config)

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def secured(secured_factory) -> SecuredServer:
    return secured_factory()


# -- a real browser -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the session (per xdist worker), shared by the browser tests; each
    test signs in afresh (the helpers of tests/browser.py check pages)."""
    from .browser import browser_installed, start_browser

    if not browser_installed():
        pytest.skip("chromium and chromium-driver are not installed (make system-packages)")
    driver = start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()
