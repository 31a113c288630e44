"""The code lists are stored as CodeSystem/ValueSet resources at start and can be reloaded."""

from fhir_server import create_app
from tests.conftest import FhirClient


def test_code_lists_are_stored_at_start_and_reload_writes_only_changes(settings):
    app = create_app(settings.but(store_code_lists=True))
    client = FhirClient(app.test_client())
    found = client.get("/fhir/CodeSystem?url=http://loinc.org").get_json()
    assert found["total"] == 1
    loinc = found["entry"][0]["resource"]
    assert len(loinc["concept"]) >= 25
    assert "Regenstrief" in loinc["copyright"]
    value_sets = client.get("/fhir/ValueSet?_summary=count").get_json()["total"]
    assert value_sets >= 5
    # a second start with the same files writes nothing new
    create_app(settings.but(store_code_lists=True))
    assert client.get(f"/fhir/CodeSystem/{loinc['id']}").get_json()["meta"]["versionId"] == "1"
    response = client.post("/fhir/$reload-terminology", json={"resourceType": "Parameters"})
    assert response.status_code == 200
    written = {p["name"]: p["valueInteger"] for p in response.get_json()["parameter"]}
    assert written["written"] == 0 and written["codeSystems"] >= 3


def test_reload_needs_post(client):
    assert client.get("/fhir/$reload-terminology").status_code == 405
