"""The submission contract: SI-DEP profiles enforced on writes, resends update instead of
duplicating, patient matching by INS, and re-notification only on contact or result changes."""

import random

import pytest

from fhir_server import create_app
from fhir_server.synthetic.generator import generate_result_bundle, resend_bundle
from tests.conftest import FhirClient


@pytest.fixture
def sidep(settings):
    """The server with SI-DEP profiles enforced (the default setting)."""
    app = create_app(settings.but(enforce_profiles=True))
    return FhirClient(app.test_client()), app.extensions["sidep.store"]


def events(store):
    return list(store.collection("_outbox").find({}, {"_id": 0}).sort("ts", 1))


def bundle(seed=1, **options):
    return generate_result_bundle(random.Random(seed), positive_rate=0.0, **options)


def post(client, body, expected=200):
    response = client.post("/fhir", json=body)
    assert response.status_code == expected, response.get_data(as_text=True)[:2000]
    return response.get_json()


def resources_of(response):
    return {e["resource"]["resourceType"]: e["resource"] for e in response["entry"] if "resource" in e}


def total(client, url):
    return client.get(url + ("&" if "?" in url else "?") + "_total=accurate").get_json()["total"]


def test_new_result_is_stored_and_notified_once(sidep):
    client, store = sidep
    response = post(client, bundle())
    assert {e["response"]["status"] for e in response["entry"]} == {"201 Created"}
    report = resources_of(response)["DiagnosticReport"]
    assert [(e["kind"], e["payload"]["report"], e["payload"]["reasons"]) for e in events(store)] == [
        ("notify-result", report["id"], ["new-result"])
    ]


RESULT_TYPES = ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport")


@pytest.mark.parametrize(
    "change,reason,changed",
    [
        ("none", None, ()),
        ("identity", None, RESULT_TYPES),  # the XMAJ tag marks every resource of the dossier
        ("contact", "contact-changed", RESULT_TYPES),
        ("result", "result-changed", ("Observation", "DiagnosticReport")),
    ],
)
def test_resend_updates_and_renotifies_only_on_contact_or_result(sidep, change, reason, changed):
    client, store = sidep
    rng = random.Random(7)
    first = generate_result_bundle(rng, positive_rate=0.0)
    created = resources_of(post(client, first))
    again = resources_of(post(client, resend_bundle(rng, first, change)))
    for rtype in RESULT_TYPES:
        assert again[rtype]["id"] == created[rtype]["id"], rtype
        # a changed resource gets a new version; an unchanged one is a no-op update
        assert again[rtype]["meta"]["versionId"] == ("2" if rtype in changed else "1"), rtype
        assert total(client, f"/fhir/{rtype}") == 1, rtype
    notified = [e["payload"]["reasons"] for e in events(store)][1:]
    assert notified == ([] if reason is None else [[reason]])


def test_each_version_records_what_changed(sidep):
    client, store = sidep
    rng = random.Random(8)
    first = generate_result_bundle(rng, positive_rate=0.0)
    patient = resources_of(post(client, first))["Patient"]
    post(client, resend_bundle(rng, first, "contact"))
    entry = store.collection("_history").find_one({"_id": f"Patient/{patient['id']}/2"})
    assert entry["chg"] == ["contact"]


def test_plain_conditional_puts_update_instead_of_duplicating(sidep):
    client, _ = sidep
    entries = {e["resource"]["resourceType"]: e for e in bundle(3)["entry"]}
    organisation = entries["Organization"]
    organisation["resource"].pop("partOf", None)  # a urn:uuid: reference resolves only inside its Bundle
    site = client.put(f"/fhir/{organisation['request']['url']}", json=organisation["resource"])
    assert site.status_code == 201, site.get_data(as_text=True)
    observation = entries["Observation"]
    observation["resource"]["subject"] = {"reference": "Patient/unknown-but-allowed"}
    observation["resource"]["performer"] = [{"reference": f"Organization/{site.get_json()['id']}"}]
    observation["resource"].pop("basedOn")
    observation["resource"].pop("specimen")
    url = f"/fhir/{observation['request']['url']}"
    first = client.put(url, json=observation["resource"])
    second = client.put(url, json=observation["resource"])
    assert (first.status_code, second.status_code) == (201, 200), first.get_data(as_text=True)
    assert first.get_json()["id"] == second.get_json()["id"]


def test_same_ins_is_the_same_patient_even_when_posted(sidep):
    client, _ = sidep
    patient = next(
        e["resource"]
        for seed in range(20)
        for e in bundle(seed)["entry"]
        if e["resource"]["resourceType"] == "Patient" and e["resource"].get("identifier")
    )
    first = client.post("/fhir/Patient", json=patient)
    second = client.post("/fhir/Patient", json={k: v for k, v in patient.items() if k != "telecom"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.get_json()["id"] == second.get_json()["id"]
    assert total(client, "/fhir/Patient") == 1


def test_unknown_test_code_is_refused_with_its_location(sidep):
    client, _ = sidep
    body = bundle(5)
    index = next(i for i, e in enumerate(body["entry"]) if e["resource"]["resourceType"] == "Observation")
    body["entry"][index]["resource"]["code"] = {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]}
    response = client.post("/fhir", json=body)
    assert response.status_code == 422
    issue = response.get_json()["issue"][0]
    assert issue["expression"][0].startswith(f"Bundle.entry[{index}].resource.code")
    assert "0000-0" in issue["diagnostics"]
    assert total(client, "/fhir/Patient") == 0


def test_bad_nir_key_is_refused_in_french(sidep):
    client, _ = sidep
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Durand", "given": ["Éloïse"]}],
        "gender": "female",
        "birthDate": "1985-04-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "285047512345699"}],
    }
    response = client.post("/fhir/Patient", json=patient, headers={"Accept-Language": "fr"})
    assert response.status_code == 422
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert "clé" in issue["diagnostics"].lower()


def test_phone_numbers_are_checked_and_stored_in_e164(sidep):
    client, _ = sidep
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Petit", "given": ["Noé"]}],
        "gender": "male",
        "birthDate": "2001-09-30",
    }
    good = client.post("/fhir/Patient", json={**patient, "telecom": [{"system": "phone", "value": "0612345678"}]})
    assert good.status_code == 201, good.get_data(as_text=True)
    assert good.get_json()["telecom"][0]["value"] == "+33612345678"
    bad = client.post("/fhir/Patient", json={**patient, "telecom": [{"system": "phone", "value": "0044 7911 123456"}]})
    assert bad.status_code == 422
    assert bad.get_json()["issue"][0]["expression"] == ["Patient.telecom[0].value"]


def test_enforcement_off_is_a_plain_r4_server(client):
    response = client.post(
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]},
        },
    )
    assert response.status_code == 201


def test_identity_correction_reaches_the_certificate(sidep, settings):
    """Certificates are generated from current data: a corrected birth name appears at once."""
    from operations.certificates.hcert import decode_and_verify
    from operations.certificates.keys import load_keyring
    from operations.certificates.trustlist import trust_list

    client, _ = sidep
    rng = random.Random(11)
    first = generate_result_bundle(rng, positive_rate=0.0, kind="naat")
    report = resources_of(post(client, first))["DiagnosticReport"]
    corrected = resend_bundle(rng, first, "identity")
    new_family = next(
        e["resource"]["name"][0]["family"] for e in corrected["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    post(client, corrected)
    text = client.get(f"/fhir/DiagnosticReport/{report['id']}/$generate-certificate?format=text/plain")
    assert text.status_code == 200, text.get_data(as_text=True)
    payload = decode_and_verify(  # what it certifies: its validity runs from a sampling in the past
        text.get_data(as_text=True).splitlines()[0], trust_list(load_keyring(settings.var_dir)), check_expiry=False
    ).payload
    assert payload["nam"]["fn"] == new_family


def test_validate_operation_returns_what_the_write_would(sidep):
    client, _ = sidep
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Durand", "given": ["Éloïse"]}],
        "gender": "female",
        "birthDate": "1985-04-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "285047512345699"}],
    }
    checked = client.post(
        "/fhir/Patient/$validate",
        json={"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]},
    )
    assert checked.status_code == 200
    issues = [i for i in checked.get_json()["issue"] if i["severity"] == "error"]
    written = client.post("/fhir/Patient", json=patient)
    assert written.status_code == 422
    assert [i["expression"] for i in issues] == [i["expression"] for i in written.get_json()["issue"]]
    assert total(client, "/fhir/Patient") == 0
    good = client.post("/fhir/Patient", json={k: v for k, v in patient.items() if k != "identifier"}).get_json()
    instance = client.get(f"/fhir/Patient/{good['id']}/$validate")
    assert instance.status_code == 200
    assert not [i for i in instance.get_json()["issue"] if i["severity"] == "error"]


def test_expand_an_stored_value_set_by_id(sidep, settings):
    app = create_app(settings.but(enforce_profiles=True, store_code_lists=True))
    client = FhirClient(app.test_client())
    value_set = client.get("/fhir/ValueSet?url=https://sidep.example.fr/fhir/ValueSet/sars-cov-2-tests").get_json()
    assert value_set["total"] == 1, value_set
    rid = value_set["entry"][0]["resource"]["id"]
    expanded = client.get(f"/fhir/ValueSet/{rid}/$expand?filter=antig")
    assert expanded.status_code == 200, expanded.get_data(as_text=True)
    codes = expanded.get_json()["expansion"]["contains"]
    texts = [" ".join([c["display"]] + [d["value"] for d in c.get("designation", [])]).lower() for c in codes]
    assert texts and all("antig" in t for t in texts)
    everything = client.get(f"/fhir/ValueSet/{rid}/$expand").get_json()["expansion"]["contains"]
    assert len(everything) > len(codes)


def test_an_accepted_write_reports_its_warnings(sidep):
    """A value that passes the rule but looks implausible is a warning: stored, and reported."""
    client, _ = sidep
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Martin", "given": ["Lou"]}],
        "gender": "female",
        "birthDate": "1880-02-02",
    }
    response = client.post("/fhir/Patient", json=patient, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    warnings = [i for i in response.get_json()["issue"] if i["severity"] == "warning"]
    assert warnings and warnings[0]["expression"] == ["Patient.birthDate"]
