"""Transaction and batch Bundles: reference rewriting, conditional entries, atomicity."""

import pytest

from fhir_server import create_app

from .conftest import FhirClient

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


def several_observations_bundle(dossiers: list[str]) -> dict:
    """A result with one Observation per dossier, each updated conditionally by its identifier."""
    bundle = result_bundle(dossiers[0])
    observation = bundle["entry"][1]
    bundle["entry"][1:2] = [
        {
            **observation,
            "fullUrl": f"urn:uuid:o{i}",
            "resource": {**observation["resource"], "identifier": [{"system": LAB, "value": dossier}]},
            "request": {"method": "PUT", "url": f"Observation?identifier={LAB}|{dossier}"},
        }
        for i, dossier in enumerate(dossiers)
    ]
    bundle["entry"][-1]["resource"]["result"] = [{"reference": f"urn:uuid:o{i}"} for i in range(len(dossiers))]
    return bundle


def observation_of(dossier: str) -> dict:
    """The Observation of a dossier on its own (no Patient to refer to)."""
    resource = several_observations_bundle([dossier])["entry"][1]["resource"]
    return {key: value for key, value in resource.items() if key != "subject"}


@pytest.fixture
def observed(mongo_uri, settings, recorder):
    """A server on a client made after the listener (a URI of its own, hence a client of its own)."""
    app = create_app(settings.but(mongodb_uri=f"{mongo_uri}&appname=one-lookup-per-type"))
    return FhirClient(app.test_client()), app.extensions["sidep.store"], recorder


def test_a_bundles_lookups_of_one_type_are_one_query(observed):
    client, store, listener = observed
    listener.record(store.db.name)
    first = client.post("/fhir", json=several_observations_bundle(["M1", "M2", "M3"]))
    again = client.post("/fhir", json=several_observations_bundle(["M1", "M2", "M3"]))
    sent = [s for s in listener.stop() if s.command == "find" and s.collection == "Observation"]
    assert first.status_code == again.status_code == 200, again.get_data(as_text=True)
    assert [s.filter["s.identifier"] for s in sent] == [{"$in": [f"{LAB}|M1", f"{LAB}|M2", f"{LAB}|M3"]}] * 2
    ids = [[e["resource"]["id"] for e in r.get_json()["entry"][1:4]] for r in (first, again)]
    assert ids[0] == ids[1] and len(set(ids[0])) == 3  # each entry found its own, and only it
    assert [e["response"]["status"] for e in again.get_json()["entry"][1:4]] == ["200 OK"] * 3
    assert count(client, f"/fhir/Observation?identifier={LAB}|M2") == 1


def test_criteria_matching_several_are_refused_at_their_entry_when_looked_up_together(observed):
    client, store, listener = observed
    for _ in range(2):  # two resources holding one identifier: made by plain creates
        assert client.post("/fhir/Observation", json=observation_of("T1")).status_code == 201
    response = client.post("/fhir", json=several_observations_bundle(["T0", "T1"]))
    assert response.status_code == 412, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "multiple-matches" and "Bundle.entry[2]" in issue["diagnostics"]
    assert count(client, f"/fhir/Observation?identifier={LAB}|T0") == 0  # nothing half-written


def test_lookups_together_are_exact_when_one_matches_more_than_the_limit(observed):
    client, store, listener = observed
    made = {}
    for value, copies in (("X", 7), ("Y", 1)):
        made[value] = [
            client.post("/fhir/Observation", json=observation_of(value)).get_json()["id"] for _ in range(copies)
        ]
    queries = [{"s.identifier": f"{LAB}|{value}"} for value in ("X", "Y", "Z")]
    listener.record(store.db.name)
    x, y, z = store.run(lambda uow: uow.find_current_each("Observation", queries, 2))
    sent = [s for s in listener.stop() if s.collection == "Observation"]
    assert len(x) == 2 and set(x) <= set(made["X"]) and y == made["Y"] and z == []
    assert len(sent) == 4  # together first; more than 2 x 3 found, so each on its own
    listener.record(store.db.name)
    assert store.run(lambda uow: uow.find_current_each("Observation", queries[1:], 2)) == [made["Y"], []]
    assert len(listener.stop()) == 1
