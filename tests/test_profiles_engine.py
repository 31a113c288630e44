"""Each SI-DEP profile rule refuses bad data at the right FHIRPath location; normalisation; $validate."""

import copy
import json
import time
from pathlib import Path

import pytest

from operations.registry import OperationCall
from profiles import engine
from profiles.base_validation import parse_errors
from profiles.validators import FINESS, FINESS_OLD, INS_NIR

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"


def patient():
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_NIR, "value": "253072A07300443"}],
        "name": [{"use": "official", "family": "Lefèvre", "given": ["Élodie", "Marie-Hélène"]}],
        "gender": "female",
        "birthDate": "1953-07-14",
        "telecom": [
            {"system": "phone", "value": "0612345678", "use": "mobile"},
            {"system": "email", "value": "elodie.lefevre@example.fr"},
        ],
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": {"district": "2A004", "city": "Ajaccio"},
            }
        ],
    }


def observation():
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "94500-6"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-02T09:30:00+02:00",
        "performer": [{"reference": "Organization/site1"}],
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260373001", "display": "Detected"}]},
    }


def organization():
    return {
        "resourceType": "Organization",
        "name": "Laboratoire",
        "identifier": [{"system": FINESS, "value": "750712184"}],
    }


def errors(issues):
    return [(i.code, i.expression[0] if i.expression else None) for i in issues if i.severity == "error"]


def test_valid_resources_have_no_issues():
    for resource in (patient(), observation(), organization()):
        assert engine.validate_resource(resource) == []
        assert parse_errors(resource["resourceType"], resource) == []


def test_every_profile_file_compiles_and_names_known_validators():
    files = sorted(Path(engine.PROFILE_DIR).glob("*.json"))
    types = {json.loads(f.read_text())["type"] for f in files}
    assert types == {"Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport", "Organization"}
    for f in files:
        compiled = engine.compile_profile(json.loads(f.read_text()), engine.registry().terminology)
        assert compiled.rules


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p.pop("birthDate"), ("required", "Patient.birthDate")),
        (lambda p: p.pop("gender"), ("required", "Patient.gender")),
        (lambda p: p.pop("name"), ("required", "Patient.name")),
        (lambda p: p["name"][0].pop("family"), ("required", "Patient.name[0].family")),
        (lambda p: p["name"][0].pop("given"), ("required", "Patient.name[0].given")),
        (lambda p: p.update(gender="M"), ("code-invalid", "Patient.gender")),
        (lambda p: p.update(birthDate="2999-01-01"), ("value", "Patient.birthDate")),
        (lambda p: p["identifier"][0].update(value="253072A07300444"), ("value", "Patient.identifier[0].value")),
        (
            lambda p: p["identifier"].insert(0, {"system": "urn:oid:1.2.250.1.213.1.4.9", "value": "123"}),
            ("value", "Patient.identifier[0].value"),
        ),
        (lambda p: p["telecom"][0].update(value="06.12.34.56.78"), ("value", "Patient.telecom[0].value")),
        (lambda p: p["telecom"][0].update(value="0044740012345"), ("value", "Patient.telecom[0].value")),
        (lambda p: p["telecom"][1].update(value="elodie@"), ("value", "Patient.telecom[1].value")),
        (lambda p: p["telecom"][1].pop("system"), ("required", "Patient.telecom[1].system")),
        (lambda p: p["name"][0].update(use="birth"), ("code-invalid", "Patient.name[0].use")),
        (lambda p: p["name"][0].update(use="usual"), ("required", "Patient.name")),  # INS requires the birth name
        (
            lambda p: p["extension"][0]["valueAddress"].update(district="2C004"),
            ("value", "Patient.extension[0].valueAddress.district"),
        ),
    ],
)
def test_patient_rules(mutate, expected):
    resource = patient()
    mutate(resource)
    assert expected in errors(engine.validate_resource(resource))


def test_issues_are_bilingual():
    resource = patient()
    resource.pop("birthDate")
    issue = engine.validate_resource(resource)[0]
    assert issue.fr and issue.en and issue.fr != issue.en
    assert issue.to_fhir("fr")["diagnostics"] == issue.fr


def test_nir_inconsistent_with_gender_is_a_warning_only():
    resource = patient()
    resource["gender"] = "male"
    issues = engine.validate_resource(resource)
    assert [i.severity for i in issues] == ["warning"]
    assert issues[0].expression == ["Patient.identifier[0].value"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda o: o["code"]["coding"][0].update(code="12345-6"), ("code-invalid", "Observation.code.coding[0]")),
        (
            lambda o: o["code"]["coding"][0].update(system="http://example.org"),
            ("code-invalid", "Observation.code.coding[0]"),
        ),
        (lambda o: o.update(status="done"), ("code-invalid", "Observation.status")),
        (
            lambda o: o["valueCodeableConcept"]["coding"][0].update(code="10828004x"),
            ("code-invalid", "Observation.valueCodeableConcept.coding[0]"),
        ),
        (lambda o: o.pop("effectiveDateTime"), ("required", "Observation.effective")),
        (lambda o: o.pop("performer"), ("required", "Observation.performer")),
        (lambda o: o.pop("subject"), ("required", "Observation.subject")),
        (lambda o: o.update(subject={"reference": "Group/g1"}), ("structure", "Observation.subject.reference")),
        (
            lambda o: o.update(performer=[{"reference": "Patient/p1"}]),
            ("structure", "Observation.performer[0].reference"),
        ),
        (
            lambda o: (o.pop("effectiveDateTime"), o.update(effectivePeriod={"start": "2024-05-02"})),
            ("structure", "Observation.effectivePeriod"),
        ),
        (
            lambda o: (o.pop("valueCodeableConcept"), o.update(valueString="positif")),
            ("structure", "Observation.valueString"),
        ),
        (lambda o: o.pop("valueCodeableConcept"), ("required", "Observation.value")),
        (lambda o: o.update(effectiveDateTime="2999-01-01T00:00:00Z"), ("value", "Observation.effectiveDateTime")),
    ],
)
def test_observation_rules(mutate, expected):
    resource = observation()
    mutate(resource)
    assert expected in errors(engine.validate_resource(resource))


def test_unknown_test_code_message_is_clear_in_both_languages():
    resource = observation()
    resource["code"]["coding"][0]["code"] = "12345-6"
    issue = next(i for i in engine.validate_resource(resource) if i.code == "code-invalid")
    assert "12345-6" in issue.en and "SARS-CoV-2 test codes" in issue.en
    assert "12345-6" in issue.fr and "Codes d'analyse SARS-CoV-2" in issue.fr


def test_quantitative_serology_needs_a_quantity():
    resource = observation()
    resource["code"]["coding"][0]["code"] = "94505-5"  # IgG [Units/volume]
    assert ("value", "Observation.valueCodeableConcept") in errors(engine.validate_resource(resource))
    resource.pop("valueCodeableConcept")
    resource["valueQuantity"] = {"value": 42.0, "unit": "U/mL", "system": "http://unitsofmeasure.org", "code": "U/mL"}
    assert engine.validate_resource(resource) == []


def test_wrong_display_is_a_warning_and_french_display_is_accepted():
    resource = observation()
    resource["valueCodeableConcept"]["coding"][0]["display"] = "Détecté"
    assert engine.validate_resource(resource) == []
    resource["valueCodeableConcept"]["coding"][0]["display"] = "Positive-ish"
    issues = engine.validate_resource(resource)
    assert [(i.severity, i.expression[0]) for i in issues] == [
        ("warning", "Observation.valueCodeableConcept.coding[0].display")
    ]


def test_specimen_rules():
    specimen = {
        "resourceType": "Specimen",
        "subject": {"reference": "Patient/p1"},
        "type": {"coding": [{"system": SNOMED, "code": "258500001"}]},
        "collection": {"collectedDateTime": "2024-05-02T09:00:00+02:00"},
    }
    assert engine.validate_resource(specimen) == []
    no_time = copy.deepcopy(specimen)
    no_time["collection"] = {"quantity": {"value": 1}}
    assert ("required", "Specimen.collection.collected") in errors(engine.validate_resource(no_time))
    bad_type = copy.deepcopy(specimen)
    bad_type["type"]["coding"][0]["code"] = "123"
    assert ("code-invalid", "Specimen.type.coding[0]") in errors(engine.validate_resource(bad_type))
    no_collection = copy.deepcopy(specimen)
    no_collection.pop("collection")
    assert ("required", "Specimen.collection") in errors(engine.validate_resource(no_collection))


def test_service_request_dossier_identifier():
    request = {
        "resourceType": "ServiceRequest",
        "status": "completed",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Organization/o1"}],
        "identifier": [{"system": "https://sidep.example.fr/dossier/750712184", "value": "240502000123"}],
    }
    assert engine.validate_resource(request) == []
    bad_lab = copy.deepcopy(request)
    bad_lab["identifier"][0]["system"] = "https://sidep.example.fr/dossier/750712185"
    assert ("value", "ServiceRequest.identifier[0].system") in errors(engine.validate_resource(bad_lab))
    other_system = copy.deepcopy(request)
    other_system["identifier"][0]["system"] = "https://lis.example.org/dossiers"
    assert ("required", "ServiceRequest.identifier") in errors(engine.validate_resource(other_system))
    spaces = copy.deepcopy(request)
    spaces["identifier"][0]["value"] = "2405 02"
    assert ("value", "ServiceRequest.identifier[0].value") in errors(engine.validate_resource(spaces))


def test_a_dossier_system_is_scoped_to_a_finess_or_to_an_rpps():
    """A nurse or doctor without organisation numbers their dossiers in .../dossier/rpps-<RPPS>."""
    rpps = "10000000009"  # 11 digits, valid Luhn key
    request = {
        "resourceType": "ServiceRequest",
        "status": "completed",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/pr1"}],
        "identifier": [{"system": f"https://sidep.example.fr/dossier/rpps-{rpps}", "value": "240502000123"}],
    }
    assert engine.validate_resource(request) == []
    short = copy.deepcopy(request)
    short["identifier"][0]["system"] = "https://sidep.example.fr/dossier/rpps-1234"
    issues = engine.validate_resource(short)
    assert ("value", "ServiceRequest.identifier[0].system") in errors(issues)
    assert any("11 digits" in i.en and "11 chiffres" in i.fr for i in issues)
    bad_key = copy.deepcopy(request)
    bad_key["identifier"][0]["system"] = "https://sidep.example.fr/dossier/rpps-10000000008"
    assert [(i.severity, i.code) for i in engine.validate_resource(bad_key)] == [("warning", "value")]
    missing = copy.deepcopy(request)
    missing["identifier"][0]["system"] = "https://lis.example.org/dossiers"
    issue = next(i for i in engine.validate_resource(missing) if i.code == "required")
    assert "dossier/<FINESS juridique>" in issue.en and "dossier/rpps-<RPPS> or " in issue.en
    assert "Le numéro de dossier est manquant" in issue.fr and "dossier/rpps-<RPPS> ou " in issue.fr


def test_diagnostic_report_rules():
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "94500-6"}]},
        "subject": {"reference": "Patient/p1"},
        "issued": "2024-05-02T18:00:00+02:00",
        "performer": [{"reference": "Organization/o1"}],
        "result": [{"reference": "Observation/o1"}],
    }
    assert engine.validate_resource(report) == []
    report.pop("result")
    report["status"] = "finished"
    found = errors(engine.validate_resource(report))
    assert ("required", "DiagnosticReport.result") in found
    assert ("code-invalid", "DiagnosticReport.status") in found
    report["code"]["coding"][0]["code"] = "11502-2"  # extensible binding: a warning only
    warnings = [i for i in engine.validate_resource(report) if i.severity == "warning"]
    assert warnings and warnings[0].expression == ["DiagnosticReport.code.coding[0]"]


def test_organization_rules():
    org = organization()
    org["identifier"][0]["value"] = "750712185"
    assert ("value", "Organization.identifier[0].value") in errors(engine.validate_resource(org))
    org["identifier"] = [{"system": "https://sirene.fr", "value": "123456789"}]
    assert ("required", "Organization.identifier") in errors(engine.validate_resource(org))
    old = organization()
    old["identifier"][0]["system"] = FINESS_OLD
    assert engine.validate_resource(old) == []


def test_custom_profile_with_fixed_pattern_and_max():
    sd = {
        "resourceType": "StructureDefinition",
        "url": "https://example.org/sd/strict-obs",
        "name": "Strict",
        "type": "Observation",
        "differential": {
            "element": [
                {"path": "Observation.status", "fixedCode": "final"},
                {
                    "path": "Observation.category",
                    "min": 1,
                    "max": "1",
                    "patternCodeableConcept": {"coding": [{"code": "laboratory"}]},
                },
            ]
        },
    }
    engine.register_profile(sd)
    resource = observation()
    resource["status"] = "amended"
    found = errors(engine.validate_resource(resource, profile_url=sd["url"]))
    assert ("value", "Observation.status") in found and ("required", "Observation.category") in found
    resource["category"] = [{"coding": [{"code": "laboratory"}]}, {"coding": [{"code": "laboratory"}]}]
    assert ("structure", "Observation.category") in errors(engine.validate_resource(resource, profile_url=sd["url"]))
    # the default profile for Observation is still the SI-DEP one
    assert engine.validate_resource(observation()) == []


def test_unknown_profile_and_wrong_type():
    assert errors(engine.validate_resource(observation(), profile_url="https://nowhere/sd"))[0][0] == "not-supported"
    sd_url = engine.registry().default_for_type["Patient"].url
    assert errors(engine.validate_resource(observation(), profile_url=sd_url))[0][0] == "invalid"


def test_unprofiled_types_pass_the_profile_step():
    assert engine.validate_resource({"resourceType": "Practitioner"}) == []


def test_engine_survives_wrong_shapes():
    weird = {"resourceType": "Patient", "name": "Dupont", "telecom": {"system": "phone"}, "identifier": [3]}
    issues = engine.validate_for_write(weird)
    assert any(i.expression == ["Patient.name"] for i in issues)  # from the base R4 parse


def test_parse_errors_have_fhirpath_locations():
    resource = patient()
    resource["name"][0]["given"] = "Élodie"
    resource["birthDate"] = "14/07/1953"
    resource["unknownThing"] = 1
    issues = parse_errors("Patient", resource)
    paths = {i.expression[0] for i in issues}
    assert {"Patient.name[0].given", "Patient.birthDate", "Patient.unknownThing"} <= paths
    assert all(i.fr for i in issues)
    assert parse_errors("Patient", {"resourceType": "Observation"})[0].code == "invalid"
    assert parse_errors(None, {"resourceType": "NoSuchType"})[0].code == "not-supported"


def test_normalise_rewrites_phones_and_old_finess_without_touching_input():
    source = patient()
    source["telecom"].append({"system": "sms", "value": "0692123456"})
    source["telecom"].append({"system": "phone", "value": "06.12.34.56.78"})  # invalid: left alone
    original = copy.deepcopy(source)
    normalised = engine.normalise_resource(source)
    assert source == original
    assert [t["value"] for t in normalised["telecom"]] == [
        "+33612345678",
        "elodie.lefevre@example.fr",
        "+262692123456",
        "06.12.34.56.78",
    ]
    org = organization()
    org["identifier"][0]["system"] = FINESS_OLD
    org["partOf"] = {"identifier": {"system": FINESS_OLD, "value": "750712184"}}
    out = engine.normalise_resource(org)
    assert out["identifier"][0]["system"] == FINESS and out["partOf"]["identifier"]["system"] == FINESS
    untouched = observation()
    assert engine.normalise_resource(untouched) is untouched


def call(level, resource_type, parameters, resource_id=None, body=None, lang="en"):
    return OperationCall("validate", level, resource_type, resource_id, parameters, body, None, None, lang)


def test_validate_operation_returns_the_write_outcome():
    from operations.validate import validate

    ok = validate(call("type", "Patient", {"resource": [patient()]}))
    assert ok["issue"][0]["severity"] == "information"
    bad = patient()
    bad["telecom"][0]["value"] = "+3306123456"
    outcome = validate(call("type", "Patient", {"resource": [bad]}, lang="fr"))
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["expression"] == ["Patient.telecom[0].value"]
    assert "+3306" in issue["diagnostics"] and issue["diagnostics"].startswith("Après +33")
    bare_body = validate(call("type", "Observation", {}, body=observation()))
    assert bare_body["issue"][0]["severity"] == "information"


def test_validate_operation_modes_and_profile():
    from fhir_server.outcome import FhirError
    from operations.validate import validate

    resource = patient()
    resource["id"] = "p2"
    outcome = validate(call("instance", "Patient", {"resource": [resource], "mode": ["update"]}, resource_id="p1"))
    assert outcome["issue"][0]["expression"] == ["Patient.id"]
    resource.pop("id")
    outcome = validate(call("type", "Patient", {"resource": [resource], "mode": ["update"]}))
    assert outcome["issue"][0]["code"] == "required"
    outcome = validate(call("type", "Patient", {"resource": [observation()]}))
    assert any(i.get("expression") == ["resourceType"] for i in outcome["issue"])
    outcome = validate(call("type", "Patient", {"resource": [patient()], "profile": ["https://nowhere/sd"]}))
    assert outcome["issue"][0]["code"] == "not-supported"
    with pytest.raises(FhirError):
        validate(call("type", "Patient", {"mode": ["bogus"], "resource": [patient()]}))
    with pytest.raises(FhirError):
        validate(call("type", "Patient", {}))


def test_profile_validation_is_fast():
    resources = [patient(), observation(), organization()]
    for r in resources:
        engine.validate_resource(r)  # warm caches
    rounds = 300
    start = time.process_time()
    for _ in range(rounds):
        for r in resources:
            engine.validate_resource(r)
    per_resource = (time.process_time() - start) / (rounds * len(resources))
    assert per_resource < 0.0005, f"{per_resource * 1e6:.0f} µs per resource"
