"""Transaction and batch Bundles: reference rewriting, conditional entries, atomicity."""

LAB = "https://sidep.example.fr/dossier/750000000"


def result_bundle(dossier: str, result_code: str = "260415000", nir: str = "1800175123456") -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": nir}],
                    "name": [{"family": "Dupont", "given": ["Jean"]}],
                    "birthDate": "1980-01-01",
                },
                "request": {"method": "PUT", "url": f"Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{nir}"},
            },
            {
                "fullUrl": "urn:uuid:o1",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "identifier": [{"system": LAB, "value": dossier}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "94500-6"}]},
                    "subject": {"reference": "urn:uuid:p1"},
                    "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": result_code}]},
                },
                "request": {"method": "PUT", "url": f"Observation?identifier={LAB}|{dossier}"},
            },
            {
                "fullUrl": "urn:uuid:r1",
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "94500-6"}]},
                    "subject": {"reference": "urn:uuid:p1"},
                    "result": [{"reference": "urn:uuid:o1"}],
                },
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
        ],
    }


def count(client, url):
    return client.get(url + ("&" if "?" in url else "?") + "_total=accurate").get_json()["total"]


def test_transaction_rewrites_references_and_answers_per_entry(client):
    response = client.post("/fhir", json=result_bundle("D1"))
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    assert bundle["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    patient, observation, report = (e["resource"] for e in bundle["entry"])
    assert observation["subject"]["reference"] == f"Patient/{patient['id']}"
    assert report["result"][0]["reference"] == f"Observation/{observation['id']}"
    assert bundle["entry"][1]["response"]["location"].startswith(f"Observation/{observation['id']}/_history/1")
    stored = client.get(f"/fhir/DiagnosticReport/{report['id']}").get_json()
    assert stored["subject"]["reference"] == f"Patient/{patient['id']}"


def test_resending_the_dossier_updates_instead_of_duplicating(client):
    first = client.post("/fhir", json=result_bundle("D2")).get_json()
    again = client.post("/fhir", json=result_bundle("D2", result_code="260373001")).get_json()
    assert [e["response"]["status"] for e in again["entry"][:2]] == ["200 OK", "200 OK"]
    assert again["entry"][1]["resource"]["id"] == first["entry"][1]["resource"]["id"]
    assert again["entry"][1]["resource"]["meta"]["versionId"] == "2"
    assert count(client, f"/fhir/Observation?identifier={LAB}|D2") == 1
    assert count(client, "/fhir/Patient") == 1


def test_failing_entry_rolls_back_everything_and_is_named(client):
    bundle = result_bundle("D3")
    bundle["entry"][2]["resource"]["subject"] = {"reference": "Patient/does-not-exist"}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 404
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0] == "Bundle.entry[2].resource.subject.reference"
    assert count(client, "/fhir/Patient") == 0
    assert count(client, "/fhir/Observation") == 0
    assert client.get("/fhir/_history").get_json().get("entry") is None


def test_invalid_resource_in_a_transaction_is_located(client):
    bundle = result_bundle("D4")
    bundle["entry"][1]["resource"]["effectiveDateTime"] = "2021-02-30"
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert count(client, "/fhir/Patient") == 0


def test_unresolved_urn_uuid_is_refused(client):
    bundle = result_bundle("D5")
    bundle["entry"][2]["resource"]["result"] = [{"reference": "urn:uuid:missing"}]
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert "urn:uuid:missing" in response.get_json()["issue"][0]["diagnostics"]
    assert count(client, "/fhir/Observation") == 0


def test_conditional_reference_is_resolved(client):
    patient = client.create({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "42"}]})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "t"},
                    "subject": {"reference": "Patient?identifier=urn:x|42"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    response = client.post("/fhir", json=bundle).get_json()
    assert response["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient['id']}"
    bundle["entry"][0]["resource"]["subject"]["reference"] = "Patient?identifier=urn:x|43"
    assert client.post("/fhir", json=bundle).status_code == 404


def test_if_none_exist_entry_returns_existing(client):
    existing = client.create({"resourceType": "Organization", "identifier": [{"system": "urn:f", "value": "1"}]})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:org",
                "resource": {"resourceType": "Organization", "identifier": [{"system": "urn:f", "value": "1"}]},
                "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:f|1"},
            },
            {
                "resource": {"resourceType": "Organization", "partOf": {"reference": "urn:uuid:org"}},
                "request": {"method": "POST", "url": "Organization"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle).get_json()
    assert response["entry"][0]["response"]["status"] == "200 OK"
    assert response["entry"][1]["resource"]["partOf"]["reference"] == f"Organization/{existing['id']}"


def test_delete_and_get_entries(client):
    doomed = client.create({"resourceType": "Patient", "gender": "male"})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{doomed['id']}"}},
            {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
        ],
    }
    response = client.post("/fhir", json=bundle).get_json()
    # DELETE is processed before GET, as the specification orders them
    assert response["entry"][1]["response"]["status"] == "204 No Content"
    assert response["entry"][0]["response"]["status"] == "410"


def test_batch_entries_are_independent(client):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": "female"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {
                "resource": {"resourceType": "Patient", "gender": "male"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    entries = response.get_json()["entry"]
    assert response.get_json()["type"] == "batch-response"
    assert [e["response"]["status"][:3] for e in entries] == ["201", "400", "404", "201"]
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert count(client, "/fhir/Patient") == 2


def test_bundle_type_and_entry_limits(client, app):
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400
    limit = app.config["SETTINGS"].max_bundle_entries
    big = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient"}}] * (limit + 1),
    }
    assert client.post("/fhir", json=big).status_code == 413
