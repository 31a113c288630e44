"""read, vread, create, update, delete, history against the real embedded database."""

from email.utils import parsedate_to_datetime

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Martin", "given": ["Léa"]}],
    "birthDate": "1990-05-17",
    "gender": "female",
}


def test_create_assigns_id_version_and_headers(client):
    response = client.post("/fhir/Patient", json=PATIENT)
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert body["name"] == PATIENT["name"]
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert parsedate_to_datetime(response.headers["Last-Modified"]).year >= 2024
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_create_ignores_client_id_and_meta_versions(client):
    body = client.create({**PATIENT, "id": "chosen", "meta": {"versionId": "9", "tag": [{"code": "t"}]}})
    assert body["id"] != "chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"] == [{"code": "t"}]


def test_read_and_vread(client):
    created = client.create(PATIENT)
    rid = created["id"]
    read = client.get(f"/fhir/Patient/{rid}")
    assert read.status_code == 200 and read.get_json() == created
    assert read.headers["ETag"] == 'W/"1"'
    updated = client.put(f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid, "gender": "other"})
    assert updated.status_code == 200 and updated.get_json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{rid}/_history/1").get_json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{rid}/_history/2").get_json()["gender"] == "other"
    assert client.get(f"/fhir/Patient/{rid}/_history/3").status_code == 404
    assert client.get(f"/fhir/Patient/{rid}/_history/x").status_code == 404


def test_read_unknown_gives_404_outcome(client):
    response = client.get("/fhir/Patient/nope")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_conditional_read_not_modified(client):
    rid = client.create(PATIENT)["id"]
    response = client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_update_creates_with_client_id(client):
    response = client.put("/fhir/Patient/lab-42", json={**PATIENT, "id": "lab-42"})
    assert response.status_code == 201
    assert response.get_json()["id"] == "lab-42"
    assert client.get("/fhir/Patient/lab-42").status_code == 200


def test_if_match_stale_version_gives_412_and_changes_nothing(client):
    rid = client.create(PATIENT)["id"]
    ok = client.put(
        f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid, "gender": "male"}, headers={"If-Match": 'W/"1"'}
    )
    assert ok.status_code == 200
    stale = client.put(
        f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid, "gender": "other"}, headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.get_json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{rid}").get_json()["gender"] == "male"


def test_delete_then_gone_and_history_keeps_it(client):
    rid = client.create(PATIENT)["id"]
    assert client.delete(f"/fhir/Patient/{rid}").status_code == 204
    assert client.get(f"/fhir/Patient/{rid}").status_code == 410
    assert client.get(f"/fhir/Patient/{rid}/_history/2").status_code == 410
    assert client.get(f"/fhir/Patient/{rid}/_history/1").status_code == 200
    history = client.get(f"/fhir/Patient/{rid}/_history").get_json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.delete(f"/fhir/Patient/{rid}").status_code == 204  # idempotent
    recreated = client.put(f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid})
    assert recreated.status_code == 201 and recreated.get_json()["meta"]["versionId"] == "3"


def test_type_and_system_history_with_count_and_since(client):
    first = client.create(PATIENT)
    since = first["meta"]["lastUpdated"]
    for _ in range(3):
        client.create(PATIENT)
    client.create({"resourceType": "Organization", "name": "Laboratoire Test"})
    type_history = client.get("/fhir/Patient/_history").get_json()
    assert type_history["type"] == "history" and len(type_history["entry"]) == 4
    assert all(e["resource"]["resourceType"] == "Patient" for e in type_history["entry"])
    system = client.get("/fhir/_history").get_json()
    assert len(system["entry"]) == 5
    page = client.get("/fhir/Patient/_history?_count=2").get_json()
    assert len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = client.get(next_url.replace("http://testserver", "")).get_json()
    ids = [e["resource"]["id"] for e in page["entry"] + second["entry"]]
    assert len(set(ids)) == 4
    later = client.get(f"/fhir/Patient/_history?_since={since}").get_json()
    assert len(later["entry"]) == 4
    assert client.get("/fhir/Patient/_history?_since=yesterday").status_code == 400


def test_instance_history_pages_through_the_versions_newest_first(client):
    rid = client.create(PATIENT)["id"]
    for given in ("Deux", "Trois", "Quatre", "Cinq"):
        update = client.put(
            f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid, "name": [{"family": "X", "given": [given]}]}
        )
        assert update.status_code == 200
    pages = [client.get(f"/fhir/Patient/{rid}/_history?_count=2").get_json()]
    while any(link["relation"] == "next" for link in pages[-1]["link"]):
        url = next(link["url"] for link in pages[-1]["link"] if link["relation"] == "next")
        pages.append(client.get(url.replace("http://testserver", "")).get_json())
    assert [[e["resource"]["meta"]["versionId"] for e in page["entry"]] for page in pages] == [
        ["5", "4"],
        ["3", "2"],
        ["1"],
    ]
    since = pages[1]["entry"][0]["resource"]["meta"]["lastUpdated"]
    later = client.get(f"/fhir/Patient/{rid}/_history", query_string={"_since": since}).get_json()
    assert [e["resource"]["meta"]["versionId"] for e in later["entry"]] == ["5", "4", "3"]


def test_instance_history_of_unknown_is_404(client):
    assert client.get("/fhir/Patient/none/_history").status_code == 404


def test_unknown_resource_type_is_404_outcome(client):
    for method, url in [("GET", "/fhir/Foo"), ("GET", "/fhir/Foo/1"), ("POST", "/fhir/Foo")]:
        response = client._call(method, url, json={"resourceType": "Foo"} if method == "POST" else None)
        assert response.status_code == 404
        assert response.get_json()["resourceType"] == "OperationOutcome"


def test_prefer_return(client):
    minimal = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.data == b"" and minimal.headers["Location"]
    outcome = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert outcome.get_json()["resourceType"] == "OperationOutcome"
    representation = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=representation"})
    assert representation.get_json()["resourceType"] == "Patient"


def test_json_only(client):
    assert client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/fhir/Patient?_format=xml").status_code == 406
    assert client.get("/fhir/Patient?_format=json").status_code == 200
    assert client.get("/fhir/Patient", headers={"Accept": "application/json"}).status_code == 200
    xml = client.post(
        "/fhir/Patient",
        headers={"Content-Type": "application/fhir+xml"},
        data=b"<Patient xmlns='http://hl7.org/fhir'/>",
    )
    assert xml.status_code == 415
    assert xml.get_json()["resourceType"] == "OperationOutcome"


def test_capability_statement_lists_what_is_supported(client):
    statement = client.get("/fhir/metadata").get_json()
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert "Observation" in resources and "Foo" not in resources
    observation_params = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert {"code", "date", "patient", "subject", "value-concept", "_id", "_lastUpdated"} <= observation_params
    assert {i["code"] for i in resources["Patient"]["interaction"]} >= {
        "read",
        "vread",
        "create",
        "update",
        "delete",
        "search-type",
    }
    assert {"create", "update", "delete"}.isdisjoint({i["code"] for i in resources["AuditEvent"]["interaction"]})
    assert {i["code"] for i in statement["rest"][0]["interaction"]} >= {"transaction", "batch"}


def test_decimals_keep_their_precision(client):
    body = (
        b'{"resourceType": "Observation", "status": "final", "code": {"text": "IgG"},'
        b' "valueQuantity": {"value": 1.50, "unit": "U/mL"}, "referenceRange": [{"low": {"value": 1.0E-3}}]}'
    )
    created = client.post("/fhir/Observation", data=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    text = client.get(f"/fhir/Observation/{created.get_json()['id']}").get_data()
    assert b'"value":1.50' in text and b'"value":0.0010' in text  # same value and precision
    found = client.get("/fhir/Observation?_count=1").get_data()
    assert b'"value":1.50' in found


def test_unchanged_update_makes_no_new_version(client):
    created = client.create(PATIENT)
    rid = created["id"]
    same = client.put(f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid})
    assert same.status_code == 200 and same.get_json()["meta"] == created["meta"]
    assert len(client.get(f"/fhir/Patient/{rid}/_history").get_json()["entry"]) == 1
    changed = client.put(f"/fhir/Patient/{rid}", json={**PATIENT, "id": rid, "gender": "other"})
    assert changed.get_json()["meta"]["versionId"] == "2"
