"""PATCH with a JSON Patch (RFC 6902) on an instance and conditionally: an update like the others
(the same validation, write hooks in the same transaction, If-Match, Prefer: return, authorisation),
and a patch document that is bad or cannot be applied gives an OperationOutcome, changing nothing."""

from __future__ import annotations

import random

import orjson
import pytest

from fhir_server.synthetic.generator import generate_result_bundle
from tests.test_auth_access import LAB_A, LAB_B, post_bundle, refused
from tests.test_submission import events, post, resources_of, sidep  # noqa: F401 (fixture)

JSON_PATCH = "application/json-patch+json"
PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Durand", "given": ["Léa"]}],
    "gender": "female",
    "identifier": [{"system": "urn:example:dossier", "value": "P-1"}],
}


def patch(client, url, operations, headers=None, content_type=JSON_PATCH):
    data = operations if isinstance(operations, bytes) else orjson.dumps(operations)
    return client.http.open(
        url,
        method="PATCH",
        data=data,
        headers={"Accept": "application/fhir+json", "Content-Type": content_type, **(headers or {})},
    )


def outcome(response, status: int) -> list[dict]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return body["issue"]


def version(client, url) -> str:
    return client.get(url).get_json()["meta"]["versionId"]


def test_patch_changes_the_resource_and_makes_a_version(client):
    rid = client.create(PATIENT)["id"]
    url = f"/fhir/Patient/{rid}"
    response = patch(
        client,
        url,
        [
            {"op": "replace", "path": "/gender", "value": "other"},
            {"op": "add", "path": "/name/0/given/-", "value": "Marie"},
            {"op": "add", "path": "/telecom", "value": [{"system": "email", "value": "a@b.fr"}]},
        ],
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["ETag"] == 'W/"2"' and response.headers["Location"].endswith(f"/Patient/{rid}/_history/2")
    stored = client.get(url).get_json()
    assert stored == response.get_json()
    assert stored["gender"] == "other" and stored["name"][0]["given"] == ["Léa", "Marie"]
    assert stored["telecom"] == [{"system": "email", "value": "a@b.fr"}]
    assert client.get("/fhir/Patient?gender=other").get_json()["entry"][0]["resource"]["id"] == rid
    assert len(client.get(f"{url}/_history").get_json()["entry"]) == 2
    assert client.get(f"{url}/_history/1").get_json()["gender"] == "female"


def test_patch_honours_prefer_return(client):
    rid = client.create(PATIENT)["id"]
    minimal = patch(
        client,
        f"/fhir/Patient/{rid}",
        [{"op": "replace", "path": "/gender", "value": "male"}],
        {"Prefer": "return=minimal"},
    )
    assert minimal.status_code == 200 and minimal.get_data() == b"" and minimal.headers["ETag"] == 'W/"2"'
    told = patch(
        client,
        f"/fhir/Patient/{rid}",
        [{"op": "replace", "path": "/gender", "value": "other"}],
        {"Prefer": "return=OperationOutcome"},
    )
    assert (
        told.get_json()["resourceType"] == "OperationOutcome"
        and "version 3" in told.get_json()["issue"][0]["diagnostics"]
    )


def test_if_match(client):
    rid = client.create(PATIENT)["id"]
    url = f"/fhir/Patient/{rid}"
    outcome(patch(client, url, [{"op": "remove", "path": "/gender"}], {"If-Match": 'W/"7"'}), 412)
    assert version(client, url) == "1" and client.get(url).get_json()["gender"] == "female"
    done = patch(client, url, [{"op": "remove", "path": "/gender"}], {"If-Match": 'W/"1"'})
    assert done.status_code == 200 and "gender" not in done.get_json()


@pytest.mark.parametrize(
    "body",
    [
        b'[{"op": "replace", "path": "/gender", "value": "male"',  # not JSON
        b'{"op": "replace", "path": "/gender", "value": "male"}',  # not an array
        b'["replace"]',
        b'[{"op": "frobnicate", "path": "/gender"}]',
        b'[{"path": "/gender", "value": "male"}]',
        b'[{"op": "replace", "path": "/gender"}]',
        b'[{"op": "move", "path": "/gender"}]',
        b'[{"op": "replace", "path": "gender", "value": "male"}]',
        b'[{"op": "replace", "path": 3, "value": "male"}]',
        b'',
    ],
)
def test_a_bad_patch_document_is_400(client, body):
    rid = client.create(PATIENT)["id"]
    outcome(patch(client, f"/fhir/Patient/{rid}", body), 400)
    assert version(client, f"/fhir/Patient/{rid}") == "1"


@pytest.mark.parametrize("number", [b"1", b"1.50"])  # 1.50 takes the decimal-keeping parser
def test_a_patch_nested_beyond_the_limit_is_413_like_any_body(client, number):
    rid = client.create(PATIENT)["id"]
    deep = b"[" * 5000 + number + b"]" * 5000
    body = b'[{"op": "add", "path": "/extension", "value": ' + deep + b"}]"
    outcome(patch(client, f"/fhir/Patient/{rid}", body), 413)
    assert version(client, f"/fhir/Patient/{rid}") == "1"


@pytest.mark.parametrize(
    "operations, where",
    [
        (
            [
                {"op": "test", "path": "/gender", "value": "male"},
                {"op": "replace", "path": "/gender", "value": "other"},
            ],
            "operation 0",
        ),
        (
            [{"op": "replace", "path": "/gender", "value": "other"}, {"op": "remove", "path": "/birthDate"}],
            "operation 1",
        ),
        ([{"op": "replace", "path": "/name/5/family", "value": "X"}], "operation 0"),
        ([{"op": "copy", "from": "/nothing", "path": "/other"}], "operation 0"),
        ([{"op": "add", "path": "/name/first/family", "value": "X"}], "operation 0"),
    ],
)
def test_a_patch_that_cannot_be_applied_is_422_and_changes_nothing(client, operations, where):
    rid = client.create(PATIENT)["id"]
    issues = outcome(patch(client, f"/fhir/Patient/{rid}", operations), 422)
    assert where in issues[0]["diagnostics"]
    assert version(client, f"/fhir/Patient/{rid}") == "1"


def test_a_failed_test_does_not_quote_the_stored_value(client):
    rid = client.create(PATIENT)["id"]
    [issue] = outcome(
        patch(client, f"/fhir/Patient/{rid}", [{"op": "test", "path": "/name/0/family", "value": "X"}]), 422
    )
    assert "Durand" not in str(issue)


def test_a_passing_test_lets_the_patch_through(client):
    rid = client.create(PATIENT)["id"]
    response = patch(
        client,
        f"/fhir/Patient/{rid}",
        [
            {"op": "test", "path": "/gender", "value": "female"},
            {"op": "replace", "path": "/gender", "value": "unknown"},
        ],
    )
    assert response.status_code == 200 and response.get_json()["gender"] == "unknown"


@pytest.mark.parametrize(
    "operations, element",
    [
        ([{"op": "replace", "path": "/id", "value": "other"}], "Patient.id"),
        ([{"op": "replace", "path": "/resourceType", "value": "Practitioner"}], "Patient.resourceType"),
        ([{"op": "remove", "path": "/id"}], "Patient.id"),
    ],
)
def test_a_patch_may_not_change_id_or_resource_type(client, operations, element):
    rid = client.create(PATIENT)["id"]
    issues = outcome(patch(client, f"/fhir/Patient/{rid}", operations), 422)
    assert issues[0]["expression"] == [element]
    assert version(client, f"/fhir/Patient/{rid}") == "1"
    assert client.get("/fhir/Patient/other").status_code == 404


def test_the_patched_resource_is_validated_like_an_update(client):
    rid = client.create(PATIENT)["id"]
    url = f"/fhir/Patient/{rid}"
    issues = outcome(patch(client, url, [{"op": "replace", "path": "/gender", "value": "femme"}]), 400)
    assert issues[0]["expression"] == ["Patient.gender"]
    issues = outcome(patch(client, url, [{"op": "add", "path": "/birthDate", "value": "1990-02-30"}]), 400)
    assert issues[0]["expression"] == ["Patient.birthDate"]
    issues = outcome(patch(client, url, [{"op": "add", "path": "/colour", "value": "blue"}]), 400)
    assert issues[0]["expression"] == ["Patient.colour"]
    assert version(client, url) == "1"


def test_with_the_sidep_profiles_the_patch_is_checked_and_normalised(sidep):  # noqa: F811
    client, store = sidep
    created = resources_of(post(client, generate_result_bundle(random.Random(5), positive_rate=0.0)))
    rid = created["Patient"]["id"]
    url = f"/fhir/Patient/{rid}"
    phone = next(i for i, t in enumerate(created["Patient"]["telecom"]) if t["system"] == "phone")
    bad = patch(client, url, [{"op": "replace", "path": f"/telecom/{phone}/value", "value": "0044 7911 123456"}])
    assert outcome(bad, 422)[0]["expression"] == [f"Patient.telecom[{phone}].value"]
    before = len(events(store))
    good = patch(client, url, [{"op": "replace", "path": f"/telecom/{phone}/value", "value": "0698765432"}])
    assert good.status_code == 200, good.get_data(as_text=True)
    assert good.get_json()["telecom"][phone]["value"] == "+33698765432"  # the stored form, as an update makes
    # the write hooks ran in the same unit of work: a change of contact details re-notifies the result
    assert [e["payload"]["reasons"] for e in events(store)[before:]] == [["contact-changed"]]


def test_content_types(client):
    rid = client.create(PATIENT)["id"]
    operations = [{"op": "replace", "path": "/gender", "value": "male"}]
    outcome(patch(client, f"/fhir/Patient/{rid}", operations, content_type="application/fhir+json"), 415)
    outcome(patch(client, f"/fhir/Patient/{rid}", operations, content_type="application/json"), 415)
    posted = client.http.post(
        "/fhir/Patient",
        data=orjson.dumps(PATIENT),
        headers={"Content-Type": JSON_PATCH, "Accept": "application/fhir+json"},
    )
    outcome(posted, 415)
    assert version(client, f"/fhir/Patient/{rid}") == "1"


def test_unknown_deleted_and_unsupported(client):
    operations = [{"op": "replace", "path": "/gender", "value": "male"}]
    outcome(patch(client, "/fhir/Patient/nobody", operations), 404)
    rid = client.create(PATIENT)["id"]
    assert client.delete(f"/fhir/Patient/{rid}").status_code == 204
    outcome(patch(client, f"/fhir/Patient/{rid}", operations), 410)
    outcome(patch(client, "/fhir/Foo/1", operations), 404)


def test_conditional_patch(client):
    rid = client.create(PATIENT)["id"]
    operations = [{"op": "replace", "path": "/gender", "value": "other"}]
    done = patch(client, "/fhir/Patient?identifier=urn:example:dossier|P-1", operations)
    assert done.status_code == 200 and done.get_json()["id"] == rid and done.get_json()["gender"] == "other"
    outcome(patch(client, "/fhir/Patient?identifier=urn:example:dossier|P-2", operations), 404)
    client.create({**PATIENT, "name": [{"family": "Autre"}]})
    outcome(patch(client, "/fhir/Patient?identifier=urn:example:dossier|P-1", operations), 412)
    outcome(patch(client, "/fhir/Patient?nosuchparameter=1", operations), 400)
    assert version(client, f"/fhir/Patient/{rid}") == "2"


def test_capability_statement_lists_patch(client):
    statement = client.get("/fhir/metadata").get_json()
    resources = {r["type"]: {i["code"] for i in r["interaction"]} for r in statement["rest"][0]["resource"]}
    assert "patch" in resources["Patient"] and "patch" in resources["Observation"]
    assert "patch" not in resources["AuditEvent"]
    assert "json-patch" in statement["rest"][0]["documentation"]


# -- authorisation -------------------------------------------------------------------------------
def _patch(session, url, operations, **headers):
    return session.patch(url, data=orjson.dumps(operations), headers={"Content-Type": JSON_PATCH, **headers})


def test_patch_needs_the_update_scope_and_the_organisation(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    reader = secured.client_session(LAB_A, "system/*.read")
    creator = secured.client_session(LAB_A, "system/*.rs system/*.c")
    mine = post_bundle(a, LAB_A, 11)
    url = f"Observation/{mine['Observation']}"
    note = [{"op": "add", "path": "/note", "value": [{"text": "relu"}]}]
    refused(_patch(reader, url, note))
    refused(_patch(creator, url, note))
    refused(_patch(b, url, note), 404)  # to another laboratory, it is not there
    # another laboratory learns nothing from a test: the refusal comes first
    refused(_patch(b, url, [{"op": "test", "path": "/status", "value": "nonsense"}]), 404)
    refused(_patch(b, f"Observation?_id={mine['Observation']}", note), 404)  # not found among B's
    assert a.get(url).json()["meta"]["versionId"] == "1"
    done = _patch(a, url, note)
    assert done.status_code == 200, done.text
    assert a.get(url).json()["note"] == [{"text": "relu"}]
    refused(_patch(a, "AuditEvent/x", note), 405)
    patched = [e for e in secured.audit_events() if e["subtype"][0]["code"] == "patch"]
    assert patched and {e["action"] for e in patched} == {"U"}
