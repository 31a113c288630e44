"""Required bindings of R4 core elements are checked on every write, in plain R4 mode as with the
SI-DEP profiles: a code outside its element's code list is 400 with the element's location, and
nothing is written."""

from __future__ import annotations

import pytest

from fhir_server import create_app
from profiles.base_validation import parse_errors
from terminology.loader import load_data_code_systems
from terminology.r4_definitions import load
from tests.conftest import FhirClient
from tests.test_bad_input import outcome, total

# (resource, where the bad code sits): one per element the conformance review named, and datatypes
# reached through a backbone element, a choice type, an extension and a contained resource
BAD_CODES = [
    ({"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}}, "Observation.status"),
    ({"resourceType": "DiagnosticReport", "status": "done", "code": {"text": "x"}}, "DiagnosticReport.status"),
    (
        {"resourceType": "ServiceRequest", "status": "busy", "intent": "order", "subject": {"reference": "Patient/p"}},
        "ServiceRequest.status",
    ),
    (
        {"resourceType": "ServiceRequest", "status": "active", "intent": "wish", "subject": {"reference": "Patient/p"}},
        "ServiceRequest.intent",
    ),
    ({"resourceType": "Specimen", "status": "lost"}, "Specimen.status"),
    ({"resourceType": "Patient", "gender": "f"}, "Patient.gender"),
    (
        {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "pigeon", "value": "2"}]},
        "Patient.telecom[1].system",
    ),
    (
        {"resourceType": "Patient", "telecom": [{"system": "phone", "use": "office", "value": "1"}]},
        "Patient.telecom[0].use",
    ),
    ({"resourceType": "Patient", "identifier": [{"use": "main", "value": "1"}]}, "Patient.identifier[0].use"),
    ({"resourceType": "Patient", "name": [{"use": "nick", "family": "A"}]}, "Patient.name[0].use"),
    ({"resourceType": "Patient", "address": [{"use": "holiday"}]}, "Patient.address[0].use"),
    ({"resourceType": "Patient", "address": [{"type": "postal"}, {"type": "mail"}]}, "Patient.address[1].type"),
    ({"resourceType": "Patient", "contact": [{"gender": "x"}]}, "Patient.contact[0].gender"),
    (
        {
            "resourceType": "Subscription",
            "status": "on",
            "reason": "r",
            "criteria": "Observation?",
            "channel": {"type": "rest-hook"},
        },
        "Subscription.status",
    ),
    (
        {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "r",
            "criteria": "Observation?",
            "channel": {"type": "carrier-pigeon"},
        },
        "Subscription.channel.type",
    ),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueQuantity": {"value": 1, "comparator": "~"},
        },
        "Observation.valueQuantity.comparator",
    ),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "component": [{"code": {"text": "c"}, "referenceRange": [{"low": {"value": 1, "comparator": "=="}}]}],
        },
        "Observation.component[0].referenceRange[0].low.comparator",
    ),
    (
        {
            "resourceType": "Patient",
            "extension": [{"url": "http://example.org/x", "valueContactPoint": {"system": "telex"}}],
        },
        "Patient.extension[0].valueContactPoint.system",
    ),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "contained": [{"resourceType": "Patient", "id": "p", "gender": "m"}],
        },
        "Observation.contained[0].gender",
    ),
    (
        {
            "resourceType": "Patient",
            "text": {"status": "written", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
        },
        "Patient.text.status",
    ),
    ({"resourceType": "Communication", "status": "sent"}, "Communication.status"),
    ({"resourceType": "CodeSystem", "status": "live", "content": "complete"}, "CodeSystem.status"),
]


@pytest.fixture
def enforcing(settings):
    return FhirClient(create_app(settings.but(enforce_profiles=True)).test_client())


@pytest.mark.parametrize("resource, where", BAD_CODES, ids=[w for _, w in BAD_CODES])
def test_a_code_outside_a_required_binding_is_400_in_plain_r4_mode(client, resource, where):
    rtype = resource["resourceType"]
    issues = outcome(client.post(f"/fhir/{rtype}", json=resource), 400)
    assert [i["expression"] for i in issues] == [[where]]
    assert issues[0]["code"] == "code-invalid"
    assert total(client, rtype) == 0


@pytest.mark.parametrize("resource, where", BAD_CODES[:6], ids=[w for _, w in BAD_CODES[:6]])
def test_the_same_with_the_sidep_profiles_on(enforcing, resource, where):
    issues = outcome(enforcing.post(f"/fhir/{resource['resourceType']}", json=resource), 400)
    assert where in [e for i in issues for e in i.get("expression", [])]


def test_every_code_of_the_list_is_accepted(client):
    for status in (
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ):
        response = client.post(
            "/fhir/Observation", json={"resourceType": "Observation", "status": status, "code": {"text": "x"}}
        )
        assert response.status_code == 201, response.get_data(as_text=True)


def test_update_and_transaction_are_checked_and_located(client):
    made = client.create({"resourceType": "Patient", "gender": "female"})
    issues = outcome(
        client.put(
            f"/fhir/Patient/{made['id']}", json={"resourceType": "Patient", "id": made["id"], "gender": "femme"}
        ),
        400,
    )
    assert issues[0]["expression"] == ["Patient.gender"]
    assert client.get(f"/fhir/Patient/{made['id']}").get_json()["gender"] == "female"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": "male"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Specimen", "status": "gone"},
                "request": {"method": "POST", "url": "Specimen"},
            },
        ],
    }
    issues = outcome(client.post("/fhir", json=bundle), 400)
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert total(client, "Patient") == 1 and total(client, "Specimen") == 0


def test_messages_in_both_languages():
    [issue] = parse_errors("Specimen", {"resourceType": "Specimen", "status": "gone"})
    assert "'gone'" in issue.en and "required binding" in issue.en
    assert "'gone'" in issue.fr and "liaison obligatoire" in issue.fr


def test_the_project_code_lists_agree_with_the_r4_definitions():
    """terminology/data holds R4 code systems with French designations; the generated lists are the
    same codes."""
    generated = load()["valueSets"]
    compared = 0
    for system in load_data_code_systems():
        if system.get("valueSet") in generated:
            assert {c["code"] for c in system["concept"]} == generated[system["valueSet"]], system["url"]
            compared += 1
    assert compared >= 8


def test_the_table_reaches_every_named_element():
    elements = load()["elements"]
    for path in (
        "Observation.status",
        "DiagnosticReport.status",
        "ServiceRequest.status",
        "ServiceRequest.intent",
        "Specimen.status",
        "Patient.gender",
        "ContactPoint.system",
        "ContactPoint.use",
        "Identifier.use",
        "HumanName.use",
        "Address.use",
        "Address.type",
        "Bundle.type",
        "Subscription.status",
        "Subscription.channel.type",
        "AuditEvent.action",
        "Timing.repeat.when",
    ):
        structure, name = path.rsplit(".", 1)
        assert "codes" in elements[structure][name], path
