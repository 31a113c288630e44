"""Bad input: an OperationOutcome with the right status and location, and nothing written."""

import pytest


def total(client, rtype):
    return client.get(f"/fhir/{rtype}?_total=accurate").get_json()["total"]


def outcome(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal")
    return body["issue"]


def test_malformed_json(client):
    issues = outcome(
        client.post(
            "/fhir/Patient", data=b'{"resourceType": "Patient",', headers={"Content-Type": "application/fhir+json"}
        ),
        400,
    )
    assert "line 1" in issues[0]["diagnostics"]
    assert total(client, "Patient") == 0


def test_not_an_object(client):
    outcome(client.post("/fhir/Patient", data=b'[1, 2]', headers={"Content-Type": "application/fhir+json"}), 400)


def test_resource_type_differs_from_url(client):
    issues = outcome(client.post("/fhir/Patient", json={"resourceType": "Observation"}), 400)
    assert issues[0]["expression"] == ["Patient.resourceType"]
    assert total(client, "Patient") == 0 and total(client, "Observation") == 0


def test_id_differs_from_url(client):
    issues = outcome(client.put("/fhir/Patient/a", json={"resourceType": "Patient", "id": "b"}), 400)
    assert issues[0]["expression"] == ["Patient.id"]
    assert client.get("/fhir/Patient/a").status_code == 404
    assert client.get("/fhir/Patient/b").status_code == 404


@pytest.mark.parametrize(
    "field,value,path",
    [
        ("birthDate", "1980-02-30", "Patient.birthDate"),
        ("birthDate", "17/05/1990", "Patient.birthDate"),
        ("deceasedDateTime", "2021-01-01T25:00:00Z", "Patient.deceasedDateTime"),
    ],
)
def test_invalid_dates_are_located(client, field, value, path):
    issues = outcome(client.post("/fhir/Patient", json={"resourceType": "Patient", field: value}), 400)
    assert issues[0]["expression"] == [path]
    assert total(client, "Patient") == 0


def test_nested_error_location_and_language(client):
    body = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B", "given": "Jean"}]}
    issues = outcome(client.post("/fhir/Patient", json=body, headers={"Accept-Language": "fr"}), 400)
    assert issues[0]["expression"] == ["Patient.name[1].given"]
    assert "une liste (tableau JSON) est attendue" in issues[0]["diagnostics"]


def test_unknown_element(client):
    issues = outcome(client.post("/fhir/Patient", json={"resourceType": "Patient", "colour": "blue"}), 400)
    assert issues[0]["expression"] == ["Patient.colour"]


def test_body_over_the_limit_is_413(client, app):
    limit = app.config["SETTINGS"].max_body_bytes
    big = {"resourceType": "Patient", "name": [{"text": "x" * (limit + 10)}]}
    issues = outcome(client.post("/fhir/Patient", json=big), 413)
    assert str(limit) in issues[0]["diagnostics"]
    assert total(client, "Patient") == 0


def test_missing_body(client):
    outcome(client.post("/fhir/Patient", data=b"", headers={"Content-Type": "application/fhir+json"}), 400)


def test_bad_if_match(client):
    rid = client.create({"resourceType": "Patient"})["id"]
    outcome(
        client.put(
            f"/fhir/Patient/{rid}", json={"resourceType": "Patient", "id": rid}, headers={"If-Match": "yesterday"}
        ),
        400,
    )


def test_method_not_allowed_is_an_outcome(client):
    outcome(client._call("PATCH", "/fhir/Patient/x/_history"), 405)  # PATCH is routed on [type] and [type]/[id]


def test_conditional_update_with_several_matches_is_412(client):
    for _ in range(2):
        client.create({"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "dup"}]})
    outcome(client.put("/fhir/Patient?identifier=urn:s|dup", json={"resourceType": "Patient"}), 412)
    outcome(
        client.post(
            "/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": "identifier=urn:s|dup"}
        ),
        412,
    )
    outcome(client.delete("/fhir/Patient?identifier=urn:s|dup"), 412)
    assert total(client, "Patient") == 2


def test_conditional_with_unknown_parameter_is_refused(client):
    # a typo in the criteria must not silently match everything
    issues = outcome(client.put("/fhir/Patient?identifer=urn:s|1", json={"resourceType": "Patient"}), 400)
    assert issues[0]["expression"] == ["identifer"]
