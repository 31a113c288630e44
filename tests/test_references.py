"""One reference grammar on every write path (create, update, conditional update, transaction,
batch), in both server modes: `Type/id`, `Type/id/_history/n`, an absolute URL ending so,
`#contained`, and inside a Bundle `urn:uuid:`, `urn:oid:` and `Type?criteria`. Anything else
(`Patient/1?`, `Patient/1#x`, `Patient//1`, `./Patient/1`...) is a 400 at the element, with nothing
written, where it used to be stored and half-resolved later (search keys, authorisation)."""

from __future__ import annotations

import copy
import random

import pytest

from fhir_server import create_app
from fhir_server.search.extract import reference_key
from fhir_server.synthetic.generator import generate_result_bundle
from profiles.base_validation import (
    json_issues,
    reference_issues,
    reference_problem,
    reference_type,
    relative_reference,
)

from .conftest import FhirClient

BAD_FORMS = [
    "{type}/{id}?",
    "{type}/{id}#x",
    "{type}//{id}",
    "./{type}/{id}",
    "/{type}/{id}",
    "{type}/{id}/",
    "{type}/{id}/_history/",
    "{type}/{id}/extra",
    "{type} /{id}",
    "{type}/{id}?_format=json",
    "http://testserver/fhir/{type}//{id}",
    "{type}?",
    "urn:uuid:",
    "#a/b",
]


@pytest.fixture(params=["plain R4", "profiles"])
def world(request, settings):
    """A stored result (profile-valid, so that only the reference makes the difference)."""
    client = FhirClient(create_app(settings.but(enforce_profiles=request.param == "profiles")).test_client())
    bundle = generate_result_bundle(random.Random(5))
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = {}
    for entry in response.get_json()["entry"]:
        stored.setdefault(entry["resource"]["resourceType"], entry["resource"])
    return client, bundle, stored


# (resource type, the element, the type it refers to)
ELEMENTS = [("Specimen", ("subject",), "Patient"), ("Observation", ("performer", 0), "Organization")]


def with_reference(resource: dict, element: tuple, value: str) -> dict:
    changed = copy.deepcopy(resource)
    target = changed
    for step in element:
        target = target[step]
    target["reference"] = value
    return changed


def expression(root: str, element: tuple) -> str:
    return root + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in element) + ".reference"


def current_versions(client, rtype: str) -> list[str]:
    db = client.http.application.extensions["sidep.store"].db
    return sorted(f"{d['_id']}/{d['v']}" for d in db[rtype].find({}, {"v": 1}))


def refused_at(response, where: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert response.get_json()["resourceType"] == "OperationOutcome" and issue["expression"] == [where], issue


@pytest.mark.parametrize("form", BAD_FORMS)
@pytest.mark.parametrize("rtype,element,target", ELEMENTS)
def test_malformed_references_are_refused_on_every_write_path(world, rtype, element, target, form):
    client, bundle, stored = world
    value = form.format(type=target, id=stored[target]["id"])
    before = current_versions(client, rtype)
    resource = with_reference(stored[rtype], element, value)
    fresh = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    refused_at(client.post(f"/fhir/{rtype}", json=fresh), expression(rtype, element))
    refused_at(client.put(f"/fhir/{rtype}/{resource['id']}", json=resource), expression(rtype, element))
    criteria = next(e["request"]["url"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)
    refused_at(client.put(f"/fhir/{criteria}", json=fresh), expression(rtype, element))
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == rtype)
    in_bundle = copy.deepcopy(bundle)
    in_bundle["entry"][index]["resource"] = with_reference(in_bundle["entry"][index]["resource"], element, value)
    refused_at(client.post("/fhir", json=in_bundle), expression(f"Bundle.entry[{index}].resource", element))
    batch = client.post("/fhir", json={**in_bundle, "type": "batch"})
    assert batch.status_code == 200, batch.get_data(as_text=True)
    answer = batch.get_json()["entry"][index]["response"]
    assert answer["status"] == "400"
    assert answer["outcome"]["issue"][0]["expression"] == [expression(f"Bundle.entry[{index}].resource", element)]
    assert current_versions(client, rtype) == before


def test_the_valid_forms_are_accepted(world):
    client, bundle, stored = world
    patient, specimen = stored["Patient"], stored["Specimen"]
    for value in (
        f"Patient/{patient['id']}",
        f"Patient/{patient['id']}/_history/1",
        f"http://testserver/fhir/Patient/{patient['id']}",
        "https://other.example/fhir/Patient/p-1.a",
        f"http://other.example/base/fhir/Patient/{patient['id']}/_history/2",
    ):
        response = client.put(f"/fhir/Specimen/{specimen['id']}", json=with_reference(specimen, ("subject",), value))
        assert response.status_code == 200, (value, response.get_data(as_text=True))
    # inside a transaction: urn:uuid: (the generator's bundle already), urn:oid: and conditional references
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Specimen")
    ins = next(i for i in patient["identifier"] if i["system"].startswith("urn:oid:1.2.250.1.213.1.4."))
    conditional = copy.deepcopy(bundle)
    conditional["entry"][index]["resource"]["subject"] = {
        "reference": f"Patient?identifier={ins['system']}|{ins['value']}"
    }
    response = client.post("/fhir", json=conditional)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["entry"][index]["resource"]["subject"]["reference"] == f"Patient/{patient['id']}"


def test_contained_references_are_accepted(client):
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "test"},
        "contained": [{"resourceType": "Patient", "id": "p1"}],
        "subject": {"reference": "#p1"},
    }
    assert client.post("/fhir/Observation", json=observation).status_code == 201


@pytest.mark.parametrize(
    "value",
    [
        "urn:uuid:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
        "urn:oid:1.2.250.1.71",
        "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1",
    ],
)
def test_bundle_local_references_are_refused_outside_a_bundle(client, value):
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "test"},
        "subject": {"reference": value},
    }
    response = client.post("/fhir/Observation", json=observation)
    refused_at(response, "Observation.subject.reference")
    assert "Bundle" in response.get_json()["issue"][0]["diagnostics"]


def test_the_grammar_is_the_one_search_and_profiles_read():
    assert relative_reference("Patient/1/_history/2") == ("Patient", "1")
    assert relative_reference("Patient//1") is None and relative_reference("./Patient/1") is None
    assert reference_key("http://h/fhir/Patient/1/_history/2", "http://h/fhir") == "Patient/1"
    assert reference_key("Patient//1", None) == "Patient//1"  # kept whole, never 'Patient/'
    assert reference_key("Patient/1?", None) == "Patient/1?"
    assert reference_type("http://h/fhir/Organization/o1") == "Organization"
    assert reference_type("Patient?identifier=x") == "Patient" and reference_type("#p1") is None
    assert reference_problem("Patient/" + "a" * 64, False) is None
    assert reference_problem("Patient/" + "a" * 65, False) is not None


@pytest.mark.parametrize("form", [*BAD_FORMS, "urn:uuid:0b4e2f3a-8c1d-4e5f-9a6b-7c8d9e0f1a2b", "{type}?identifier=x|1"])
def test_the_reference_check_alone_finds_what_the_whole_json_check_finds(form):
    """A request body's resources are checked for their references alone (the HTTP layer has
    checked the rest): the same issues, at the same places, as the whole check, in a Bundle or not."""
    bundle = generate_result_bundle(random.Random(9))
    resource = bundle["entry"][3]["resource"]
    resource["contained"] = [{"resourceType": "Patient", "id": "c1", "link": [{"other": {"reference": "x"}}]}]
    resource["contained"][0]["link"][0]["other"]["reference"] = form.format(type="Patient", id="p")
    resource["subject"] = {"reference": form.format(type="Patient", id="p1")}
    rtype = resource["resourceType"]
    expected = 0 if form.startswith(("urn:uuid:0", "{type}?identifier")) else 2
    for body, root, bundled, found in (
        (bundle, "Bundle", False, expected),
        (resource, rtype, True, expected),
        (resource, rtype, False, None),
    ):
        alone = reference_issues(body, root, bundled)
        assert sorted(alone, key=lambda i: i.expression) == sorted(
            json_issues(body, root, references=True, in_bundle=bundled), key=lambda i: i.expression
        )
        # outside a Bundle, the entry's urn:uuid: references are faults too
        assert len(alone) == found if found is not None else len(alone) > 2, (form, root, bundled, alone)
