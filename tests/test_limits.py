"""Every limit on what a client sends is a setting, and going past it gets a 4xx OperationOutcome
that names the limit, with nothing written: string length, JSON values per body, nesting depth,
stored document size, search value length, and the body size of a chunked request (over a real
socket: that is where werkzeug cut such bodies short)."""

from __future__ import annotations

import http.client
import json
import random
from urllib.parse import urlsplit

import orjson
import pytest

from fhir_server import create_app
from fhir_server.search.registry import parameters_for
from fhir_server.settings import Settings
from fhir_server.synthetic.generator import generate_result_bundle

from .conftest import FhirClient

SMALL = dict(max_string_length=100, max_elements=60, max_depth=8, max_document_bytes=6_000, max_search_value_length=40)


@pytest.fixture
def small(settings) -> FhirClient:
    return FhirClient(create_app(settings.but(**SMALL)).test_client())


def outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def stored(client: FhirClient, rtype: str = "Patient") -> int:
    """What the database holds of `rtype`, current versions and history alike."""
    db = client.http.application.extensions["sidep.store"].db
    return db[rtype].count_documents({}) + db["_history"].count_documents({"t": rtype})


def test_a_string_over_the_limit_is_413_where_it_is(small):
    at_limit = {"resourceType": "Patient", "name": [{"family": "x" * 100}]}
    assert small.post("/fhir/Patient", json=at_limit).status_code == 201
    before = stored(small)
    issue = outcome(small.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "x" * 101}]}), 413)
    assert issue["code"] == "too-costly" and issue["expression"] == ["Patient.name[0].family"]
    assert "100" in issue["diagnostics"]
    assert stored(small) == before


def test_too_many_json_values_is_413(small):
    body = {"resourceType": "Patient", "name": [{"given": [f"g{i}" for i in range(60)]}]}
    issue = outcome(small.post("/fhir/Patient", json=body), 413)
    assert "60" in issue["diagnostics"] and issue["expression"] == ["Patient"]
    assert stored(small) == 0


def test_nesting_deeper_than_the_limit_is_413(small):
    nested: dict = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(4):
        nested = {"url": "http://example.org/x", "extension": [nested]}
    issue = outcome(small.post("/fhir/Patient", json={"resourceType": "Patient", "extension": [nested]}), 413)
    assert "8" in issue["diagnostics"] and issue["expression"][0].startswith("Patient.extension[0].extension[0]")
    assert stored(small) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType": "Patient", "extension": ' + b"[" * 3000 + b"]" * 3000 + b"}",  # past the JSON parser's own
        b'{"resourceType": "Patient", "x": 1.50, "y": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}",  # the decimal-keeping parser
    ],
)
def test_nesting_that_breaks_the_parsers_is_413_too(client, body):
    outcome(client.post("/fhir/Patient", data=body, headers={"Content-Type": "application/fhir+json"}), 413)


def test_a_stored_document_over_the_limit_is_413_before_writing(small):
    # under every body limit, but the name is indexed several times (name, family, phonetic, :exact...)
    names = [{"family": f"{i}" + "f" * 90, "given": [f"{i}" + "g" * 90]} for i in range(8)]
    issue = outcome(small.post("/fhir/Patient", json={"resourceType": "Patient", "name": names}), 413)
    assert issue["code"] == "too-costly" and "6000" in issue["diagnostics"]
    assert stored(small) == 0


def test_a_resource_whose_index_would_pass_mongodb_s_16_mb_is_413_not_500(client):
    """The real case, default settings: a 4.8 MB Patient under the 5 MB body limit whose stored
    document (resource plus extracted index fields) would be about 25 MB."""
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "f" * 1_600_000, "given": ["g" * 1_600_000, "h" * 1_600_000]}],
    }
    issue = outcome(client.post("/fhir/Patient", json=patient), 413)
    assert "16000000" in issue["diagnostics"] and issue["expression"] == ["Patient"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    issue = outcome(client.post("/fhir", json=bundle), 413)
    assert issue["expression"][0] == "Bundle.entry[1]"
    assert stored(client) == 0  # the transaction's first entry was not written either


def test_search_values_and_names_over_the_limit_are_400(small):
    small.create({"resourceType": "Patient", "name": [{"family": "x" * 40}]})
    assert small.get("/fhir/Patient?name=" + "x" * 40).get_json()["total"] == 1
    issue = outcome(small.get("/fhir/Patient?name=" + "x" * 41), 400)
    assert issue["expression"] == ["name"] and "40" in issue["diagnostics"]
    outcome(small.get("/fhir/Patient?" + "n" * 41 + "=x"), 400)
    outcome(
        small.post(
            "/fhir/Patient/_search",
            data="name=" + "x" * 41,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    # as matched: case and accents folded ("ﷺ" folds to 18 characters)
    outcome(small.get("/fhir/Patient?name=" + "ﷺ" * 3), 400)
    # conditional criteria are search values too
    outcome(small.put("/fhir/Patient?identifier=" + "x" * 41, json={"resourceType": "Patient"}), 400)


def test_the_default_search_value_limit_keeps_every_pattern_under_the_database_cap(client):
    """The reported case (a 4,000-character value: the database caps regular expressions at 1,000
    characters) is a 400; values at the limit, written to give the longest pattern (every
    character escaped, alternatives, system-only tokens), are answered."""
    limit = Settings().max_search_value_length
    outcome(client.get("/fhir/Patient?name=" + "a" * 4000), 400)
    worst = {"string": ".", "token": ".|,", "uri": "."}
    for code, param in parameters_for("Patient").items():
        if param.type in worst:
            for modifier in ("", ":contains", ":exact", ":text", ":not", ":below"):
                value = (worst[param.type] * limit)[:limit]
                response = client.get(f"/fhir/Patient?{code}{modifier}={value}")
                assert response.status_code < 500, (code, modifier, response.get_data(as_text=True))


def chunked_post(base_url: str, path: str, body: bytes, chunk: int = 64 * 1024) -> tuple[int, dict]:
    """POST `body` with Transfer-Encoding: chunked and no Content-Length, over a socket."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(
            "POST",
            url.path + path,
            body=(body[i : i + chunk] for i in range(0, len(body), chunk)),
            headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_is_413_not_malformed_json(live_server):
    limit = Settings().max_body_bytes
    patient = {"resourceType": "Patient", "name": [{"family": "x" * (limit + 1000)}]}
    status, body = chunked_post(live_server, "/Patient", orjson.dumps(patient))
    assert status == 413 and body["resourceType"] == "OperationOutcome", body
    assert str(limit) in body["issue"][0]["diagnostics"]
    # under the limit, the same way, it is read whole
    status, body = chunked_post(
        live_server, "/Patient", orjson.dumps({"resourceType": "Patient", "name": [{"family": "x" * 100_000}]})
    )
    assert status == 201 and len(body["name"][0]["family"]) == 100_000
    # a transaction too
    bundle = generate_result_bundle(random.Random(5))
    bundle["entry"][0]["resource"]["name"] = [{"text": "x" * limit}]
    status, body = chunked_post(live_server, "", orjson.dumps(bundle))
    assert status == 413 and body["resourceType"] == "OperationOutcome"


def test_limits_are_read_from_the_environment(monkeypatch):
    for name, value in (
        ("MAX_STRING_LENGTH", "11"),
        ("MAX_ELEMENTS", "12"),
        ("MAX_DEPTH", "13"),
        ("MAX_DOCUMENT_BYTES", "14"),
        ("MAX_SEARCH_VALUE_LENGTH", "15"),
    ):
        monkeypatch.setenv(name, value)
    config = Settings.from_env()
    assert (
        config.max_string_length,
        config.max_elements,
        config.max_depth,
        config.max_document_bytes,
        config.max_search_value_length,
    ) == (11, 12, 13, 14, 15)
