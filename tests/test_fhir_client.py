"""A standard FHIR client library (fhirpy, synchronous) against the server on a real socket:
create, read, update, delete, search (with paging and _include) and a transaction.

Profile enforcement is off (the live_server fixture's settings): this is the plain R4 server that
any generic client should be able to use."""

from __future__ import annotations

import uuid

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound


@pytest.fixture
def fhir(live_server) -> SyncFHIRClient:
    return SyncFHIRClient(live_server, extra_headers={"Accept": "application/fhir+json"})


def new_patient(fhir: SyncFHIRClient, family: str, **extra):
    patient = fhir.resource(
        "Patient", name=[{"family": family, "given": ["Peter"]}], gender="male", birthDate="1974-12-25", **extra
    )
    patient.save()
    return patient


def test_create_read_update_delete(fhir):
    patient = new_patient(fhir, "Chalmers", identifier=[{"system": "urn:oid:1.2.3", "value": "42"}])
    assert patient.id and patient["meta"]["versionId"] == "1"

    read = fhir.reference("Patient", patient.id).to_resource()
    assert read.serialize() == patient.serialize()
    assert read.get_by_path(["name", 0, "family"]) == "Chalmers"

    read["gender"] = "other"
    read.save()  # PUT Patient/<id>
    assert read["meta"]["versionId"] == "2"
    assert fhir.reference("Patient", patient.id).to_resource()["gender"] == "other"

    read.delete()
    with pytest.raises(ResourceNotFound):  # 410 Gone
        fhir.reference("Patient", patient.id).to_resource()


def test_create_on_update_with_a_client_id(fhir):
    rid = f"client-{uuid.uuid4().hex[:8]}"
    patient = fhir.resource("Patient", id=rid, name=[{"family": "Lambert"}])
    patient.save()  # PUT Patient/<rid>: created at the client's id
    assert patient.id == rid and patient["meta"]["versionId"] == "1"
    assert fhir.reference("Patient", rid).to_resource()["name"] == [{"family": "Lambert"}]


def test_invalid_resource_is_an_operation_outcome(fhir):
    with pytest.raises(OperationOutcome) as raised:
        fhir.resource("Patient", gender="not-a-gender", birthDate="yesterday").save()
    assert "birthDate" in str(raised.value) or "gender" in str(raised.value)


def test_search_count_paging_and_include(fhir):
    family = f"Fam{uuid.uuid4().hex[:8]}"
    patients = [new_patient(fhir, family) for _ in range(5)]
    new_patient(fhir, "Someone-else")

    search = fhir.resources("Patient").search(family=family)
    assert search.count() == 5
    assert {p.id for p in search.fetch()} == {p.id for p in patients}
    # fetch_all follows Bundle.link[next] (absolute URLs on the server's base)
    assert sorted(p.id for p in search.limit(2).fetch_all()) == sorted(p.id for p in patients)
    assert search.sort("-_lastUpdated").first().id == patients[-1].id

    observation = fhir.resource(
        "Observation", status="final", code={"text": "test"}, subject=patients[0].to_reference()
    )
    observation.save()
    bundle = (
        fhir.resources("Observation")
        .search(subject=f"Patient/{patients[0].id}")
        .include("Observation", "subject")
        .fetch_raw()
    )
    found = {(e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"]) for e in bundle.entry}
    assert found == {("Observation", observation.id, "match"), ("Patient", patients[0].id, "include")}


def test_transaction(fhir):
    family = f"Tx{uuid.uuid4().hex[:8]}"
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "request": {"method": "POST", "url": "Patient"},
                "resource": {"resourceType": "Patient", "name": [{"family": family}]},
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "test"},
                    "subject": {"reference": patient_url},
                },
            },
        ],
    }
    result = fhir.execute("", method="post", data=bundle)  # POST [base]
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created"]
    patient_id = result["entry"][0]["response"]["location"].split("/")[1]
    observation_id = result["entry"][1]["response"]["location"].split("/")[1]

    observation = fhir.reference("Observation", observation_id).to_resource()
    assert observation["subject"]["reference"] == f"Patient/{patient_id}"
    assert observation["subject"].to_resource()["name"][0]["family"] == family
