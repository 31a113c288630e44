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
def redis_url(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def settings(mongo_uri, tmp_path) -> Settings:
    """A fresh database per test. Indexes are skipped (they cost ~0.5 s a database and change no
    result); tests about indexes use `indexed_settings`."""
    return Settings(mongodb_uri=mongo_uri, mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
                    base_url="http://testserver/fhir", var_dir=str(tmp_path / "var"),
                    create_indexes=False, enforce_profiles=False, store_code_lists=False,
                    auth_enabled=False)


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
    config = Settings(mongodb_uri=mongo_uri, mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
                      base_url=f"http://127.0.0.1:{port}/fhir", var_dir=str(tmp_path / "var"),
                      create_indexes=False, enforce_profiles=False, store_code_lists=False,
                      auth_enabled=False)
    server = make_server("127.0.0.1", port, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield config.base_url
    server.shutdown()
