"""Search parameters from the registry and the matching rules of their types (string, token,
reference, date), chains, _has, :missing, comma OR and repeated-parameter AND.

Every test writes its own synthetic data through the API and searches it back over HTTP.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
INS = "urn:oid:1.2.250.1.213.1.4.8"  # INS-NIR system
DOSSIER = "urn:oid:1.2.250.1.71.4.2.7.1"  # synthetic laboratory dossier numbers
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
PCR = "94500-6"  # SARS-CoV-2 RNA NAA+probe
ANTIGEN = "94558-4"  # SARS-CoV-2 Ag immunoassay
DETECTED, NOT_DETECTED = "260373001", "260415000"
NASOPHARYNGEAL = "258500001"


# -- helpers shared by the search test modules --------------------------------------------------
def search(client, rtype: str, params=(), status: int = 200, headers=None) -> dict:
    """GET [base]/rtype?params (a list of pairs, properly URL-encoded) and check the status."""
    query = urlencode(list(params.items()) if isinstance(params, dict) else list(params))
    response = client.get(f"/fhir/{rtype}?{query}" if query else f"/fhir/{rtype}", headers=headers)
    body = response.get_json()
    assert response.status_code == status, response.get_data(as_text=True)
    return body


def matches(bundle: dict) -> list[str]:
    """Ids of the entries with search.mode = match, in bundle order."""
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def found(client, rtype: str, *pairs) -> set[str]:
    bundle = search(client, rtype, list(pairs))
    ids = matches(bundle)
    assert len(ids) == len(set(ids)), f"duplicate entries for {pairs}: {ids}"
    return set(ids)


def issue_expressions(outcome: dict) -> list[str]:
    return [x for issue in outcome.get("issue", []) for x in issue.get("expression", [])]


def patient(client, family="Dupont", given=("Jean",), **extra) -> dict:
    return client.create({"resourceType": "Patient", "name": [{"family": family, "given": list(given)}], **extra})


def organization(client, name, finess, **extra) -> dict:
    return client.create(
        {"resourceType": "Organization", "name": name, "identifier": [{"system": FINESS, "value": finess}], **extra}
    )


def lab_result(
    client,
    patient_id: str,
    org_id: str,
    dossier: str,
    when: str,
    positive: bool,
    code: str = PCR,
    subject_ref: str | None = None,
) -> dict[str, dict]:
    """One laboratory dossier: ServiceRequest, Specimen, Observation, DiagnosticReport."""
    subject = {"reference": subject_ref or f"Patient/{patient_id}"}
    lab = {"reference": f"Organization/{org_id}"}
    concept = {
        "coding": [{"system": LOINC, "code": code, "display": "SARS-CoV-2 ARN (détection)"}],
        "text": "Recherche SARS-CoV-2",
    }
    sr = client.create(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": DOSSIER, "value": dossier}],
            "code": concept,
            "subject": subject,
            "authoredOn": when,
            "requester": lab,
            "performer": [lab],
        }
    )
    sp = client.create(
        {
            "resourceType": "Specimen",
            "identifier": [{"system": DOSSIER, "value": dossier}],
            "type": {"coding": [{"system": SNOMED, "code": NASOPHARYNGEAL}]},
            "subject": subject,
            "collection": {"collectedDateTime": when},
        }
    )
    result = DETECTED if positive else NOT_DETECTED
    obs = client.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": concept,
            "identifier": [{"system": DOSSIER, "value": dossier}],
            "subject": subject,
            "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": result}]},
            "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
            "specimen": {"reference": f"Specimen/{sp['id']}"},
            "performer": [lab],
        }
    )
    dr = client.create(
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": concept,
            "identifier": [{"system": DOSSIER, "value": dossier}],
            "subject": subject,
            "effectiveDateTime": when,
            "issued": when,
            "result": [{"reference": f"Observation/{obs['id']}"}],
            "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
            "performer": [lab],
        }
    )
    return {"sr": sr, "sp": sp, "obs": obs, "dr": dr}


# -- common parameters --------------------------------------------------------------------------
def test_id_single_and_comma_or(client):
    a, b, c = (patient(client, f"Nom{i}") for i in range(3))
    assert found(client, "Patient", ("_id", a["id"])) == {a["id"]}
    assert found(client, "Patient", ("_id", f"{a['id']},{c['id']}")) == {a["id"], c["id"]}
    assert found(client, "Patient", ("_id", "no-such-id")) == set()


def test_last_updated(client):
    import time

    first = patient(client, "Premier")
    time.sleep(0.02)
    second = patient(client, "Second")
    t1, t2 = first["meta"]["lastUpdated"], second["meta"]["lastUpdated"]
    assert t1 < t2
    assert found(client, "Patient", ("_lastUpdated", f"ge{t2}")) == {second["id"]}
    assert found(client, "Patient", ("_lastUpdated", f"lt{t2}")) == {first["id"]}
    assert found(client, "Patient", ("_lastUpdated", t1)) == {first["id"]}  # eq, ms precision
    assert found(client, "Patient", ("_lastUpdated", f"gt{t1}")) == {second["id"]}
    assert found(client, "Patient", ("_lastUpdated", "gt2000-01-01")) == {first["id"], second["id"]}
    assert found(client, "Patient", ("_lastUpdated", "lt2000")) == set()
    assert found(client, "Patient", ("_lastUpdated", f"ne{t1}")) == {second["id"]}


@pytest.mark.parametrize("rtype", ["Patient", "Organization"])
def test_identifier_token_forms(client, rtype):
    with_system = client.create({"resourceType": rtype, "identifier": [{"system": INS, "value": "1840512345678"}]})
    no_system = client.create({"resourceType": rtype, "identifier": [{"value": "1840512345678"}]})
    other = client.create({"resourceType": rtype, "identifier": [{"system": "urn:other", "value": "999"}]})
    assert found(client, rtype, ("identifier", f"{INS}|1840512345678")) == {with_system["id"]}
    assert found(client, rtype, ("identifier", "1840512345678")) == {with_system["id"], no_system["id"]}
    assert found(client, rtype, ("identifier", "|1840512345678")) == {no_system["id"]}
    assert found(client, rtype, ("identifier", f"{INS}|")) == {with_system["id"]}
    assert found(client, rtype, ("identifier", f"{INS}|999")) == set()
    assert found(client, rtype, ("identifier", f"{INS}|1840512345678,urn:other|999")) == {
        with_system["id"],
        other["id"],
    }
    assert found(client, rtype, ("identifier:not", f"{INS}|1840512345678")) == {no_system["id"], other["id"]}


def test_identifier_on_clinical_types(client):
    p = patient(client)
    org = organization(client, "Laboratoire Test", "010000024")
    one = lab_result(client, p["id"], org["id"], "D-0001", "2021-03-04T10:00:00Z", True)
    lab_result(client, p["id"], org["id"], "D-0002", "2021-03-05T10:00:00Z", False)
    for key, rtype in (
        ("sr", "ServiceRequest"),
        ("sp", "Specimen"),
        ("obs", "Observation"),
        ("dr", "DiagnosticReport"),
    ):
        assert found(client, rtype, ("identifier", f"{DOSSIER}|D-0001")) == {one[key]["id"]}, rtype
        assert found(client, rtype, ("identifier", "D-0001")) == {one[key]["id"]}, rtype


# -- string ---------------------------------------------------------------------------------------
def test_string_is_case_and_accent_insensitive_prefix(client):
    lefevre = patient(client, "Lefèvre", ("Éloïse", "Marie"))
    lefebvre = patient(client, "LEFEBVRE", ("Jean-Pierre",))
    oeuvre = patient(client, "Œuvray", ("Zoé",))
    assert found(client, "Patient", ("family", "lefevre")) == {lefevre["id"]}
    assert found(client, "Patient", ("family", "LEFÈVRE")) == {lefevre["id"]}
    assert found(client, "Patient", ("family", "lef")) == {lefevre["id"], lefebvre["id"]}
    assert found(client, "Patient", ("family", "fevre")) == set()  # a prefix, not a substring
    assert found(client, "Patient", ("name", "ÉLO")) == {lefevre["id"]}
    assert found(client, "Patient", ("name", "mar")) == {lefevre["id"]}  # second given name
    assert found(client, "Patient", ("name", "lefebvre")) == {lefebvre["id"]}  # family via name
    assert found(client, "Patient", ("given", "jean-p")) == {lefebvre["id"]}
    assert found(client, "Patient", ("given", "lefevre")) == set()  # given does not search family
    assert found(client, "Patient", ("family", "oeuv")) == {oeuvre["id"]}  # ligature folded
    assert found(client, "Patient", ("given", "zoe")) == {oeuvre["id"]}


def test_string_exact_and_contains(client):
    lefevre = patient(client, "Lefèvre", ("Éloïse",))
    other = patient(client, "Delefèvre", ("Anne",))
    assert found(client, "Patient", ("family:exact", "Lefèvre")) == {lefevre["id"]}
    assert found(client, "Patient", ("family:exact", "lefèvre")) == set()
    assert found(client, "Patient", ("family:exact", "Lefevre")) == set()
    assert found(client, "Patient", ("family:exact", "Lef")) == set()
    assert found(client, "Patient", ("family:contains", "FEVR")) == {lefevre["id"], other["id"]}
    assert found(client, "Patient", ("name:contains", "loi")) == {lefevre["id"]}
    # regex metacharacters in a value are literal
    assert found(client, "Patient", ("family:contains", ".*")) == set()
    bundle = search(client, "Patient", [("family:foo", "x")], status=400)
    assert "family:foo" in issue_expressions(bundle)


def test_string_comma_or_and_repeated_and(client):
    a = patient(client, "Martin", ("Paul",))
    b = patient(client, "Bernard", ("Paul",))
    patient(client, "Petit", ("Louis",))
    assert found(client, "Patient", ("family", "martin,bernard")) == {a["id"], b["id"]}
    assert found(client, "Patient", ("given", "paul"), ("family", "mar")) == {a["id"]}
    assert found(client, "Patient", ("name", "paul"), ("name", "bern")) == {b["id"]}
    # an escaped comma is part of the value, not a separator
    assert found(client, "Patient", ("family", "martin\\,bernard")) == set()


def test_patient_demographics(client):
    f = patient(
        client,
        "Durand",
        ("Alice",),
        gender="female",
        birthDate="1990-03-04",
        telecom=[{"system": "phone", "value": "0612345678"}, {"system": "email", "value": "alice.durand@example.org"}],
        address=[{"line": ["1 rue de la Paix"], "city": "Paris", "postalCode": "75011"}],
    )
    m = patient(
        client,
        "Durand",
        ("Bruno",),
        gender="male",
        birthDate="1985-12-31",
        telecom=[{"system": "email", "value": "0612345678"}],
        address=[{"city": "Lyon", "postalCode": "69003"}],
    )
    nobody = patient(client, "Durand", ("Chris",))
    assert found(client, "Patient", ("gender", "female")) == {f["id"]}
    assert found(client, "Patient", ("gender", "male,female")) == {f["id"], m["id"]}
    assert found(client, "Patient", ("gender:not", "female")) == {m["id"], nobody["id"]}
    assert found(client, "Patient", ("gender:missing", "true")) == {nobody["id"]}
    assert found(client, "Patient", ("gender:missing", "false")) == {f["id"], m["id"]}
    assert found(client, "Patient", ("birthdate", "1990")) == {f["id"]}
    assert found(client, "Patient", ("birthdate", "1990-03")) == {f["id"]}
    assert found(client, "Patient", ("birthdate", "1990-03-04")) == {f["id"]}
    assert found(client, "Patient", ("birthdate", "1990-03-05")) == set()
    assert found(client, "Patient", ("birthdate", "lt1990")) == {m["id"]}
    assert found(client, "Patient", ("birthdate", "ge1985-12-31")) == {f["id"], m["id"]}
    # phone and email are telecom restricted by system
    assert found(client, "Patient", ("phone", "0612345678")) == {f["id"]}
    # phones are stored in E.164: both spellings find them
    assert found(client, "Patient", ("phone", "+33612345678")) == {f["id"]}
    assert found(client, "Patient", ("telecom", "phone|+33612345678")) == {f["id"]}
    assert found(client, "Patient", ("email", "0612345678")) == {m["id"]}
    assert found(client, "Patient", ("email", "alice.durand@example.org")) == {f["id"]}
    assert found(client, "Patient", ("telecom", "0612345678")) == {f["id"], m["id"]}
    assert found(client, "Patient", ("telecom", "phone|0612345678")) == {f["id"]}
    assert found(client, "Patient", ("address-postalcode", "75")) == {f["id"]}
    assert found(client, "Patient", ("address-postalcode", "69003")) == {m["id"]}
    assert found(client, "Patient", ("address-postalcode:missing", "true")) == {nobody["id"]}


# -- token --------------------------------------------------------------------------------------
def test_token_forms_and_modifiers(client):
    p = patient(client)
    loinc = client.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{p['id']}"},
            "code": {"coding": [{"system": LOINC, "code": PCR, "display": "SARS-CoV-2 ARN Détection"}]},
        }
    )
    antigen = client.create(
        {
            "resourceType": "Observation",
            "status": "preliminary",
            "code": {"coding": [{"system": LOINC, "code": ANTIGEN}], "text": "Test antigénique"},
        }
    )
    local = client.create({"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": PCR}]}})
    other_system = client.create(
        {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "urn:local", "code": PCR}]}}
    )
    everything = {loinc["id"], antigen["id"], local["id"], other_system["id"]}
    assert found(client, "Observation", ("code", PCR)) == {loinc["id"], local["id"], other_system["id"]}
    assert found(client, "Observation", ("code", f"{LOINC}|{PCR}")) == {loinc["id"]}
    assert found(client, "Observation", ("code", f"|{PCR}")) == {local["id"]}
    assert found(client, "Observation", ("code", f"{LOINC}|")) == {loinc["id"], antigen["id"]}
    assert found(client, "Observation", ("code", f"{LOINC}|{ANTIGEN},urn:local|{PCR}")) == {
        antigen["id"],
        other_system["id"],
    }
    assert found(client, "Observation", ("code", f"{LOINC}|,|{PCR}")) == {loinc["id"], antigen["id"], local["id"]}
    assert found(client, "Observation", ("code:not", PCR)) == {antigen["id"]}
    assert found(client, "Observation", ("code:not", f"{LOINC}|{PCR}")) == everything - {loinc["id"]}
    assert found(client, "Observation", ("code:not", f"{LOINC}|")) == {local["id"], other_system["id"]}
    # :text searches display and text, case- and accent-insensitively, as a prefix
    assert found(client, "Observation", ("code:text", "sars-cov-2 arn detection")) == {loinc["id"]}
    assert found(client, "Observation", ("code:text", "TEST ANTIG")) == {antigen["id"]}
    assert found(client, "Observation", ("code:text", "antig")) == set()
    # codes are case-sensitive
    assert found(client, "Observation", ("status", "FINAL")) == set()
    assert found(client, "Observation", ("status", "final")) == everything - {antigen["id"]}
    assert found(client, "Observation", ("status", "final"), ("code", f"{LOINC}|")) == {loinc["id"]}
    assert found(client, "Observation", ("subject:missing", "true")) == everything - {loinc["id"]}


# -- reference ----------------------------------------------------------------------------------
def test_reference_forms(client):
    p1, p2 = patient(client, "Un"), patient(client, "Deux")
    org = organization(client, "Laboratoire", "010000024")
    relative = lab_result(client, p1["id"], org["id"], "D-1", "2021-03-04T10:00:00Z", True)
    absolute = lab_result(
        client,
        p2["id"],
        org["id"],
        "D-2",
        "2021-03-04T10:00:00Z",
        False,
        subject_ref=f"http://testserver/fhir/Patient/{p2['id']}",
    )
    o1, o2 = relative["obs"]["id"], absolute["obs"]["id"]
    for param in ("subject", "patient"):
        assert found(client, "Observation", (param, f"Patient/{p1['id']}")) == {o1}
        assert found(client, "Observation", (param, p1["id"])) == {o1}
        assert found(client, "Observation", (param, f"http://testserver/fhir/Patient/{p1['id']}")) == {o1}
        # a reference stored as an absolute URL of this server is the same resource
        assert found(client, "Observation", (param, f"Patient/{p2['id']}")) == {o2}
        assert found(client, "Observation", (param, f"Patient/{p2['id']}/_history/1")) == {o2}
    assert found(client, "Observation", ("subject:Patient", p1["id"])) == {o1}
    assert found(client, "Observation", ("subject", f"{p1['id']},{p2['id']}")) == {o1, o2}
    assert found(client, "Observation", ("subject", f"Organization/{p1['id']}")) == set()
    assert found(client, "Observation", ("subject", f"http://elsewhere.example/fhir/Patient/{p1['id']}")) == set()


def test_chained_reference(client):
    alice = patient(client, "Lefèvre", ("Alice",), identifier=[{"system": INS, "value": "2900475123456"}])
    bob = patient(client, "Lefebvre", ("Bob",), identifier=[{"system": INS, "value": "1850169123456"}])
    org = organization(client, "Laboratoire", "010000024")
    a = lab_result(client, alice["id"], org["id"], "D-1", "2021-03-04T10:00:00Z", True)
    b = lab_result(client, bob["id"], org["id"], "D-2", "2021-03-04T10:00:00Z", False)
    ins = f"{INS}|2900475123456"
    assert found(client, "Observation", ("subject:Patient.identifier", ins)) == {a["obs"]["id"]}
    assert found(client, "Observation", ("subject.identifier", ins)) == {a["obs"]["id"]}
    assert found(client, "Observation", ("patient.identifier", ins)) == {a["obs"]["id"]}
    assert found(client, "DiagnosticReport", ("subject.family", "lef")) == {a["dr"]["id"], b["dr"]["id"]}
    assert found(client, "DiagnosticReport", ("subject.family", "lefevre")) == {a["dr"]["id"]}
    # the modifier belongs to the chained parameter
    assert found(client, "ServiceRequest", ("subject:Patient.family:exact", "Lefebvre")) == {b["sr"]["id"]}
    assert found(client, "ServiceRequest", ("subject.family:exact", "lefebvre")) == set()
    assert found(client, "Observation", ("subject.identifier", f"{INS}|0000")) == set()
    # an unknown chained parameter is an error, not "every patient"
    bundle = search(client, "Observation", [("subject.nosuchparam", "x")], status=400)
    assert "subject.nosuchparam" in issue_expressions(bundle)
    # a deleted patient no longer matches a chain
    assert client.delete(f"/fhir/Patient/{alice['id']}").status_code in (200, 204)
    assert found(client, "Observation", ("subject.identifier", ins)) == set()


def test_has_one_level(client):
    pos, neg, none = patient(client, "Positif"), patient(client, "Negatif"), patient(client, "Aucun")
    org = organization(client, "Laboratoire", "010000024")
    lab_result(client, pos["id"], org["id"], "D-1", "2021-03-04T10:00:00Z", True)
    lab_result(client, neg["id"], org["id"], "D-2", "2021-03-04T10:00:00Z", False, code=ANTIGEN)
    assert found(client, "Patient", ("_has:Observation:patient:code", PCR)) == {pos["id"]}
    assert found(client, "Patient", ("_has:Observation:patient:code", f"{PCR},{ANTIGEN}")) == {pos["id"], neg["id"]}
    assert found(client, "Patient", ("_has:Observation:subject:value-concept", f"{SNOMED}|{NOT_DETECTED}")) == {
        neg["id"]
    }
    assert found(client, "Patient", ("_has:DiagnosticReport:patient:status", "final")) == {pos["id"], neg["id"]}
    assert found(client, "Patient", ("_has:Observation:patient:code", "0000-0")) == set()
    assert none["id"] not in found(client, "Patient", ("_has:Observation:patient:status", "final"))
    bundle = search(client, "Patient", [("_has:Observation:patient:nosuchparam", "x")], status=400)
    assert "_has:Observation:patient:nosuchparam" in issue_expressions(bundle)
    # a deleted observation no longer makes its patient match
    positive = search(client, "Observation", [("patient", pos["id"])])["entry"][0]["resource"]["id"]
    assert client.delete(f"/fhir/Observation/{positive}").status_code in (200, 204)
    assert found(client, "Patient", ("_has:Observation:patient:code", PCR)) == set()


# -- the registry's clinical parameters ---------------------------------------------------------
@pytest.fixture
def two_dossiers(client):
    alice, bob = patient(client, "Alice"), patient(client, "Bob")
    lab = organization(client, "Laboratoire A", "010000024")
    other = organization(client, "Laboratoire B", "010000032")
    a = lab_result(client, alice["id"], lab["id"], "D-1", "2021-03-04T10:00:00+01:00", True)
    b = lab_result(client, bob["id"], other["id"], "D-2", "2021-03-06T08:00:00Z", False, code=ANTIGEN)
    return {"alice": alice, "bob": bob, "lab": lab, "other": other, "a": a, "b": b}


def test_service_request_parameters(client, two_dossiers):
    d = two_dossiers
    a, b = d["a"]["sr"]["id"], d["b"]["sr"]["id"]
    assert found(client, "ServiceRequest", ("subject", f"Patient/{d['alice']['id']}")) == {a}
    assert found(client, "ServiceRequest", ("patient", d["bob"]["id"])) == {b}
    assert found(client, "ServiceRequest", ("code", PCR)) == {a}
    assert found(client, "ServiceRequest", ("code", f"{LOINC}|{ANTIGEN}")) == {b}
    assert found(client, "ServiceRequest", ("authored", "2021-03-04")) == {a}
    assert found(client, "ServiceRequest", ("authored", "ge2021-03-05")) == {b}
    assert found(client, "ServiceRequest", ("status", "active")) == {a, b}
    assert found(client, "ServiceRequest", ("status", "completed")) == set()
    assert found(client, "ServiceRequest", ("requester", f"Organization/{d['lab']['id']}")) == {a}
    assert found(client, "ServiceRequest", ("performer", d["other"]["id"])) == {b}


def test_specimen_parameters(client, two_dossiers):
    d = two_dossiers
    a, b = d["a"]["sp"]["id"], d["b"]["sp"]["id"]
    assert found(client, "Specimen", ("subject", f"Patient/{d['alice']['id']}")) == {a}
    assert found(client, "Specimen", ("patient", d["bob"]["id"])) == {b}
    assert found(client, "Specimen", ("collected", "2021-03-04T09:00:00Z")) == {a}  # 10:00+01:00
    assert found(client, "Specimen", ("collected", "2021-03")) == {a, b}
    assert found(client, "Specimen", ("type", f"{SNOMED}|{NASOPHARYNGEAL}")) == {a, b}
    assert found(client, "Specimen", ("type", "119342007")) == set()
    period = client.create(
        {
            "resourceType": "Specimen",
            "collection": {"collectedPeriod": {"start": "2021-03-10T08:00:00Z", "end": "2021-03-10T09:00:00Z"}},
        }
    )
    assert found(client, "Specimen", ("collected", "2021-03-10")) == {period["id"]}
    assert found(client, "Specimen", ("collected", "2021-03-10T08:30:00Z")) == set()  # not contained
    assert period["id"] in found(client, "Specimen", ("collected", "ap2021-03-10T08:30:00Z"))
    assert found(client, "Specimen", ("collected", "le2021-03-10T08:00:00Z")) == {a, b, period["id"]}
    assert found(client, "Specimen", ("collected", "sa2021-03-06")) == {period["id"]}


def test_observation_parameters(client, two_dossiers):
    d = two_dossiers
    a, b = d["a"]["obs"]["id"], d["b"]["obs"]["id"]
    assert found(client, "Observation", ("subject", f"Patient/{d['alice']['id']}")) == {a}
    assert found(client, "Observation", ("patient", d["bob"]["id"])) == {b}
    assert found(client, "Observation", ("code", f"{LOINC}|{PCR}")) == {a}
    assert found(client, "Observation", ("date", "2021-03-04")) == {a}
    assert found(client, "Observation", ("date", "gt2021-03-04")) == {b}
    assert found(client, "Observation", ("status", "final")) == {a, b}
    assert found(client, "Observation", ("value-concept", f"{SNOMED}|{DETECTED}")) == {a}
    assert found(client, "Observation", ("value-concept", NOT_DETECTED)) == {b}
    assert found(client, "Observation", ("based-on", f"ServiceRequest/{d['a']['sr']['id']}")) == {a}
    assert found(client, "Observation", ("specimen", d["b"]["sp"]["id"])) == {b}
    assert found(client, "Observation", ("performer", f"Organization/{d['lab']['id']}")) == {a}
    assert found(client, "Observation", ("performer", f"Practitioner/{d['lab']['id']}")) == set()


def test_diagnostic_report_parameters(client, two_dossiers):
    d = two_dossiers
    a, b = d["a"]["dr"]["id"], d["b"]["dr"]["id"]
    assert found(client, "DiagnosticReport", ("subject", f"Patient/{d['alice']['id']}")) == {a}
    assert found(client, "DiagnosticReport", ("patient", d["bob"]["id"])) == {b}
    assert found(client, "DiagnosticReport", ("code", ANTIGEN)) == {b}
    assert found(client, "DiagnosticReport", ("date", "le2021-03-05")) == {a}
    assert found(client, "DiagnosticReport", ("issued", "2021-03-06T08:00:00Z")) == {b}
    assert found(client, "DiagnosticReport", ("issued", "ge2021-03-04")) == {a, b}
    assert found(client, "DiagnosticReport", ("status", "final")) == {a, b}
    assert found(client, "DiagnosticReport", ("result", f"Observation/{d['a']['obs']['id']}")) == {a}
    assert found(client, "DiagnosticReport", ("based-on", d["b"]["sr"]["id"])) == {b}
    assert found(client, "DiagnosticReport", ("performer", d["other"]["id"])) == {b}


def test_organization_parameters(client):
    group = client.create(
        {
            "resourceType": "Organization",
            "name": "Groupe Biologie Île-de-France",
            "type": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}
            ],
        }
    )
    site = organization(
        client,
        "Laboratoire Élysée",
        "750000010",
        alias=["Labo Champs"],
        partOf={"reference": f"Organization/{group['id']}"},
        type=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "other"}]}],
    )
    assert found(client, "Organization", ("name", "labo")) == {site["id"]}  # name and alias
    assert found(client, "Organization", ("name", "laboratoire elysee")) == {site["id"]}
    assert found(client, "Organization", ("name", "groupe biologie ile")) == {group["id"]}
    assert found(client, "Organization", ("identifier", f"{FINESS}|750000010")) == {site["id"]}
    assert found(client, "Organization", ("partof", f"Organization/{group['id']}")) == {site["id"]}
    assert found(client, "Organization", ("partof:missing", "true")) == {group["id"]}
    assert found(client, "Organization", ("type", "prov")) == {group["id"]}
    # FINESS identifiers sent under the older system spelling are found under either spelling
    legacy = client.create(
        {
            "resourceType": "Organization",
            "name": "Ancien",
            "identifier": [{"system": "http://finess.sante.gouv.fr", "value": "690000014"}],
        }
    )
    assert found(client, "Organization", ("identifier", "http://finess.sante.gouv.fr|690000014")) == {legacy["id"]}
    assert found(client, "Organization", ("identifier", "https://finess.esante.gouv.fr|690000014")) == {legacy["id"]}
    assert found(client, "Organization", ("type", "http://terminology.hl7.org/CodeSystem/organization-type|other")) == {
        site["id"]
    }


# -- date ---------------------------------------------------------------------------------------
@pytest.fixture
def dated(client):
    """Observations whose dates test precision, time zones and periods."""

    def obs(**when):
        return client.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": PCR}]},
                **when,
            }
        )["id"]

    return {
        "o1": obs(effectiveDateTime="2021-03-04T23:30:00+02:00"),  # 2021-03-04T21:30Z
        "o2": obs(effectiveDateTime="2021-03-05T01:30:00+02:00"),  # 2021-03-04T23:30Z
        "o3": obs(effectiveDateTime="2021-03-05T10:00:00Z"),
        "o4": obs(effectivePeriod={"start": "2021-02-20", "end": "2021-03-10"}),
        "o5": obs(effectiveDateTime="2021-04-01"),
        "o6": obs(),
    }


DATE_CASES = [
    ("2021-03-04", {"o1", "o2"}),
    ("eq2021-03-04", {"o1", "o2"}),
    ("2021-03", {"o1", "o2", "o3"}),
    ("2021", {"o1", "o2", "o3", "o4", "o5"}),
    ("2021-03-04T21:30:00Z", {"o1"}),
    ("2021-03-04T23:30:00+02:00", {"o1"}),
    ("2021-03-05T01:30:00+02:00", {"o2"}),
    ("2021-03-05T01:30+02:00", {"o2"}),
    ("ne2021-03-04", {"o3", "o4", "o5"}),
    ("gt2021-03-04", {"o3", "o4", "o5"}),
    ("lt2021-03-05", {"o1", "o2", "o4"}),
    ("ge2021-03-05", {"o3", "o4", "o5"}),
    ("le2021-03-04", {"o1", "o2", "o4"}),
    ("sa2021-03-04", {"o3", "o5"}),
    ("eb2021-03-05", {"o1", "o2"}),
    ("ap2021-03-04", {"o1", "o2", "o3", "o4", "o5"}),
    ("ap2015-01-01", set()),
    ("2021-03-04,2021-04-01", {"o1", "o2", "o5"}),
    ("2021-03-05", {"o3"}),
    ("2021-03-06", set()),
]


def test_date_prefixes_precision_time_zones_and_periods(client, dated):
    for value, expected in DATE_CASES:
        got = found(client, "Observation", ("date", value))
        assert got == {dated[k] for k in expected}, (value, sorted(k for k, v in dated.items() if v in got))


def test_date_and_missing(client, dated):
    ids = {v: k for k, v in dated.items()}
    both = found(client, "Observation", ("date", "ge2021-03-04"), ("date", "lt2021-03-05"))
    assert {ids[i] for i in both} == {"o1", "o2", "o4"}
    assert {ids[i] for i in found(client, "Observation", ("date:missing", "true"))} == {"o6"}
    assert {ids[i] for i in found(client, "Observation", ("date:missing", "false"))} == {"o1", "o2", "o3", "o4", "o5"}


def test_date_with_unencoded_plus_in_time_zone(client, dated):
    # '+' not percent-encoded in a query string arrives as a space
    response = client.get("/fhir/Observation?date=2021-03-05T01:30:00+02:00")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert matches(response.get_json()) == [dated["o2"]]


@pytest.mark.parametrize("value", ["2021-13-01", "2021-02-30", "04/03/2021", "gt", "xx2021", "2021-03-04T25:00:00Z"])
def test_bad_date_is_400_naming_the_parameter(client, value):
    body = search(client, "Observation", [("date", value)], status=400)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert "date" in issue_expressions(body)


def test_date_fraction_of_second_has_its_own_precision(client):
    obs = client.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectiveDateTime": "2021-03-04T10:00:00.53Z",
        }
    )["id"]
    assert found(client, "Observation", ("date", "2021-03-04T10:00:00.5Z")) == {obs}  # 500-599 ms
    assert found(client, "Observation", ("date", "2021-03-04T10:00:00.53Z")) == {obs}
    assert found(client, "Observation", ("date", "2021-03-04T10:00:00.530Z")) == set()  # 530-539 not in 530
    assert found(client, "Observation", ("date", "2021-03-04T10:00:00.6Z")) == set()
    assert found(client, "Observation", ("date", "2021-03-04T11:00:00+01:00")) == {obs}
