"""Organisation binding and scopes: a client of laboratory A cannot read or write for laboratory B,
tried on every interaction — read, vread, history, search (with _include/_revinclude, chains and
_has, counts), create, update, delete, the conditional ones, transaction and batch entries,
$operations on instances — and scopes limit what a token may do."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories

LAB_A, LAB_B = make_laboratories(random.Random(7), 2)


@dataclass
class Posted:
    """The ids a result bundle produced, by type."""

    ids: dict
    bundle: dict

    def __getitem__(self, rtype: str) -> str:
        return self.ids[rtype][0]


def post_bundle(session, lab, seed: int, person=None, kind: str | None = None) -> Posted:
    bundle = generate_result_bundle(random.Random(seed), lab, person=person, kind=kind, include_legal_entity=False)
    response = session.post("", json=bundle)
    assert response.status_code == 200, response.text
    ids: dict = {}
    for entry in response.json()["entry"]:
        rtype, rid = entry["response"]["location"].split("/")[:2]
        ids.setdefault(rtype, []).append(rid)
    return Posted(ids, bundle)


@pytest.fixture
def world(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    operator = secured.client_session(None, "system/*.* system/AuditEvent.read", role="operator")
    results_a = [post_bundle(a, LAB_A, seed) for seed in (1, 2)]
    result_b = post_bundle(b, LAB_B, 3)
    return secured, a, b, operator, results_a, result_b


def ids(response, rtype: str | None = None) -> set[str]:
    assert response.status_code == 200, response.text
    return {
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e.get("search", {}).get("mode") != "outcome" and (rtype is None or e["resource"]["resourceType"] == rtype)
    }


def refused(response, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def not_there(response, rtype: str, rid: str) -> None:
    """Answered exactly as a resource that does not exist: 404, with the same words."""
    refused(response, 404)
    assert response.json()["issue"][0]["diagnostics"] == f"{rtype}/{rid} is not known"


def without_ins(patient: dict) -> dict:
    others = [
        i for i in patient.get("identifier", []) if not i.get("system", "").startswith("urn:oid:1.2.250.1.213.1.4.")
    ]
    rest = {k: v for k, v in patient.items() if k != "identifier"}
    return {**rest, "identifier": others} if others else rest  # FHIR JSON has no empty arrays


RESULT_TYPES = ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport")


def test_reads_of_another_laboratory_are_refused(world):
    _, a, b, operator, results_a, result_b = world
    mine = results_a[0]
    for rtype in RESULT_TYPES:
        rid = mine[rtype]
        assert a.get(f"{rtype}/{rid}").status_code == 200
        not_there(b.get(f"{rtype}/{rid}"), rtype, rid)
        not_there(b.get(f"{rtype}/{rid}/_history/1"), rtype, rid)
        not_there(b.get(f"{rtype}/{rid}/_history/99"), rtype, rid)
        not_there(b.get(f"{rtype}/{rid}/_history"), rtype, rid)
        missing = rid[:-4] + "ffff"
        for path in (missing, f"{missing}/_history/1", f"{missing}/_history"):
            not_there(b.get(f"{rtype}/{path}"), rtype, missing)
        assert operator.get(f"{rtype}/{rid}").status_code == 200
    # what is not patient data is shared: the performing site's Organization
    assert b.get(f"Organization/{mine['Organization']}").status_code == 200
    # and B reads its own
    assert b.get(f"Observation/{result_b['Observation']}").status_code == 200


def test_searches_see_only_the_organisation_s_results(world):
    _, a, b, operator, results_a, result_b = world
    for rtype in RESULT_TYPES:
        assert ids(a.get(rtype)) == {r[rtype] for r in results_a}
        assert ids(b.get(rtype)) == {result_b[rtype]}
        assert ids(
            b.post(f"{rtype}/_search", data="", headers={"Content-Type": "application/x-www-form-urlencoded"})
        ) == {result_b[rtype]}
        assert ids(operator.get(rtype)) == {r[rtype] for r in results_a} | {result_b[rtype]}
        assert ids(b.get(rtype, params={"_id": results_a[0][rtype]})) == set()
        assert b.get(rtype, params={"_summary": "count"}).json()["total"] == 1
        assert b.get(rtype, params={"_total": "accurate"}).json()["total"] == 1
    # by A's patient, directly, chained and reverse-chained
    patient_a = results_a[0]["Patient"]
    assert ids(b.get("Observation", params={"subject": f"Patient/{patient_a}"})) == set()
    assert ids(a.get("Observation", params={"subject": f"Patient/{patient_a}"})) == {results_a[0]["Observation"]}
    ins = next(i for i in results_a[0].bundle["entry"][1]["resource"]["identifier"])
    chained = {"subject:Patient.identifier": f"{ins['system']}|{ins['value']}"}
    assert ids(b.get("Observation", params=chained)) == set()
    assert ids(a.get("Observation", params=chained)) == {results_a[0]["Observation"]}
    has = {"_has:Observation:subject:status": "final"}
    assert ids(b.get("Patient", params=has)) == {result_b["Patient"]}
    assert ids(a.get("Patient", params=has)) == {r["Patient"] for r in results_a}


def test_history_sees_only_the_organisation_s_results(world):
    _, a, b, operator, results_a, result_b = world
    for rtype in ("Observation", "Patient", "DiagnosticReport"):
        assert ids(b.get(f"{rtype}/_history")) == {result_b[rtype]}
        assert ids(a.get(f"{rtype}/_history")) == {r[rtype] for r in results_a}
    system = b.get("_history")
    assert system.status_code == 200
    seen = {
        (
            e["request"]["url"].split("/")[0] if "/" in e["request"]["url"] else e["request"]["url"],
            e["fullUrl"].rsplit("/", 1)[1],
        )
        for e in system.json()["entry"]
    }
    assert not {rid for _, rid in seen} & {rid for r in results_a for v in r.ids.values() for rid in v}


def test_include_and_revinclude_never_bring_another_organisation_s_resources(world):
    secured, a, b, operator, results_a, result_b = world
    db = secured.store.db
    # Only the database can make a B result point at A's patient, or an A result at B's patient:
    # the API refuses both (see test_writes_...). Make them, and search from both sides.
    patient_a, patient_b = results_a[0]["Patient"], result_b["Patient"]
    obs_b = result_b["Observation"]
    db["Observation"].update_one(
        {"_id": obs_b},
        {
            "$set": {
                "res.subject.reference": f"Patient/{patient_a}",
                "s.subject": [f"Patient/{patient_a}"],
                "s.patient": [f"Patient/{patient_a}"],
            }
        },
    )
    obs_a = results_a[1]["Observation"]
    db["Observation"].update_one(
        {"_id": obs_a},
        {
            "$set": {
                "res.subject.reference": f"Patient/{patient_b}",
                "s.subject": [f"Patient/{patient_b}"],
                "s.patient": [f"Patient/{patient_b}"],
            }
        },
    )
    included = b.get("Observation", params={"_include": "Observation:subject"})
    assert ids(included, "Observation") == {obs_b}
    assert ids(included, "Patient") == set()  # A's patient is not included
    revincluded = b.get("Patient", params={"_revinclude": "Observation:subject"})
    assert ids(revincluded, "Patient") == {patient_b}
    assert ids(revincluded, "Observation") == set()  # A's observation about B's patient is not included
    both = b.get(
        "DiagnosticReport",
        params={
            "_include": ["DiagnosticReport:subject", "DiagnosticReport:result"],
            "_revinclude": "Observation:based-on",
        },
    )
    assert ids(both) == {result_b["DiagnosticReport"], patient_b, obs_b}
    # A sees its own through includes
    assert patient_a in ids(a.get("DiagnosticReport", params={"_include": "DiagnosticReport:subject"}), "Patient")
    # and the operator everything
    assert ids(operator.get("Observation", params={"_include": "Observation:subject"}), "Patient") >= {
        patient_a,
        patient_b,
    }


def test_writes_for_another_laboratory_are_refused(world):
    secured, a, b, operator, results_a, result_b = world
    mine = results_a[0]
    obs_id = mine["Observation"]
    observation = a.get(f"Observation/{obs_id}").json()
    # update and delete of A's resources, by id
    for rtype in RESULT_TYPES:
        current = a.get(f"{rtype}/{mine[rtype]}").json()
        not_there(b.put(f"{rtype}/{mine[rtype]}", json=current), rtype, mine[rtype])
        # and a free id answers alike: patient data gets server-assigned ids
        free = mine[rtype][:-4] + "ffff"
        not_there(b.put(f"{rtype}/{free}", json={**current, "id": free}), rtype, free)
        assert b.delete(f"{rtype}/{mine[rtype]}").status_code == 204  # deletes nothing, as for a missing one
        assert a.get(f"{rtype}/{mine[rtype]}").json()["meta"]["versionId"] == current["meta"]["versionId"]
    # create with A's site as performer, or about A's patient
    new = {k: v for k, v in observation.items() if k not in ("id", "meta")}
    refused(b.post("Observation", json=new))
    b_site = b.get(f"Organization/{result_b['Organization']}").json()
    mine_for_b = {**new, "performer": [{"reference": f"Organization/{b_site['id']}"}]}
    about_a = b.post("Observation", json=mine_for_b)  # still about A's patient: to B, no such patient
    refused(about_a, 404)
    gone = {**mine_for_b, "subject": {"reference": f"Patient/{mine['Patient'][:-4]}ffff"}}
    assert b.post("Observation", json=gone).json()["issue"][0]["diagnostics"].replace(
        gone["subject"]["reference"], "X"
    ) == about_a.json()["issue"][0]["diagnostics"].replace(f"Patient/{mine['Patient']}", "X")
    about_b = {
        **mine_for_b,
        "subject": {"reference": f"Patient/{result_b['Patient']}"},
        "basedOn": [{"reference": f"ServiceRequest/{result_b['ServiceRequest']}"}],
        "specimen": {"reference": f"Specimen/{result_b['Specimen']}"},
    }
    assert b.post("Observation", json=about_b).status_code == 201
    no_performer = {k: v for k, v in about_b.items() if k != "performer"}
    refused(b.post("Observation", json=no_performer))
    by_identifier = {
        **about_b,
        "performer": [{"identifier": {"system": "https://finess.esante.gouv.fr", "value": LAB_A.sites[0].finess}}],
    }
    refused(b.post("Observation", json=by_identifier))
    # the performing site's Organization of A cannot be rewritten by B
    site_a = a.get(f"Organization/{mine['Organization']}").json()
    refused(b.put(f"Organization/{site_a['id']}", json=site_a))
    refused(
        b.put(
            "Organization",
            params={"identifier": f"https://finess.esante.gouv.fr|{LAB_A.sites[0].finess}"},
            json={k: v for k, v in site_a.items() if k not in ("id", "meta")},
        )
    )
    refused(b.delete(f"Organization/{site_a['id']}"))


def test_conditional_interactions_match_only_the_organisation_s_resources(world):
    _, a, b, operator, results_a, result_b = world
    mine = results_a[0]
    observation = a.get(f"Observation/{mine['Observation']}").json()
    identifier = observation["identifier"][0]
    criteria = {"identifier": f"{identifier['system']}|{identifier['value']}"}
    b_body = {k: v for k, v in observation.items() if k not in ("id", "meta")}
    b_body.update(
        subject={"reference": f"Patient/{result_b['Patient']}"},
        performer=[{"reference": f"Organization/{result_b['Organization']}"}],
        basedOn=[{"reference": f"ServiceRequest/{result_b['ServiceRequest']}"}],
        specimen={"reference": f"Specimen/{result_b['Specimen']}"},
    )
    # If-None-Exist does not find (nor return) A's observation: B creates its own
    created = b.post("Observation", json=b_body, headers={"If-None-Exist": f"identifier={criteria['identifier']}"})
    assert created.status_code == 201 and created.json()["id"] != mine["Observation"]
    # conditional update and delete do not reach A's either
    assert b.delete(
        "Observation", params={"identifier": "|".join([identifier["system"], identifier["value"] + "-x"])}
    ).status_code in (200, 204)
    b_only = b.delete("Observation", params=criteria)
    assert b_only.status_code in (200, 204)
    assert a.get(f"Observation/{mine['Observation']}").status_code == 200
    updated = b.put("Observation", params=criteria, json=b_body)
    assert updated.status_code == 201 and updated.json()["id"] != mine["Observation"]
    assert a.get(f"Observation/{mine['Observation']}").json()["meta"]["versionId"] == "1"


def test_transactions_and_batches_are_checked_entry_by_entry(world):
    secured, a, b, operator, results_a, result_b = world
    mine = results_a[0]
    before = secured.store.db["_history"].count_documents({})
    # B posting A's laboratory result bundle (A's site as performer): refused, nothing written
    bundle = generate_result_bundle(random.Random(11), LAB_A, include_legal_entity=False)
    refused(b.post("", json=bundle))
    assert secured.store.db["_history"].count_documents({}) == before
    # B's own bundle with a GET of A's observation: the read entry finds nothing
    own = generate_result_bundle(random.Random(12), LAB_B, include_legal_entity=False)
    own["entry"].append({"request": {"method": "GET", "url": f"Observation/{mine['Observation']}"}})
    own["entry"].append({"request": {"method": "GET", "url": f"Observation?_id={mine['Observation']}"}})
    response = b.post("", json=own)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[-2]["response"]["status"].startswith("404")
    assert entries[-1]["resource"].get("total", 0) == 0
    # a transaction deleting A's resource deletes nothing; updating it: not there
    deleting = b.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": f"Observation/{mine['Observation']}"}}],
        },
    )
    assert deleting.status_code == 200 and a.get(f"Observation/{mine['Observation']}").status_code == 200
    patient = a.get(f"Patient/{mine['Patient']}").json()
    patient = {**patient, "name": [{"family": "Intrus", "given": ["Jean"]}]}
    refused(
        b.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient/{mine['Patient']}"}}],
            },
        ),
        404,
    )
    # a batch: each entry refused on its own
    batch = b.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"request": {"method": "GET", "url": f"Patient/{mine['Patient']}"}},
                {"request": {"method": "DELETE", "url": f"Specimen/{mine['Specimen']}"}},
                {"request": {"method": "GET", "url": f"Patient/{result_b['Patient']}"}},
            ],
        },
    )
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses[0].startswith("404") and statuses[1].startswith("204") and statuses[2].startswith("200")
    assert a.get(f"Specimen/{mine['Specimen']}").status_code == 200


def test_operations_on_instances_are_checked(world):
    _, a, b, operator, results_a, result_b = world
    mine = results_a[0]
    not_there(
        b.get(f"DiagnosticReport/{mine['DiagnosticReport']}/$generate-certificate"),
        "DiagnosticReport",
        mine["DiagnosticReport"],
    )
    not_there(
        b.post(f"Observation/{mine['Observation']}/$validate", json={"resourceType": "Parameters"}),
        "Observation",
        mine["Observation"],
    )
    own = b.post(f"Observation/{result_b['Observation']}/$validate", json={"resourceType": "Parameters"})
    assert own.status_code == 200, own.text
    refused(b.post("$reload-terminology", json={"resourceType": "Parameters"}))


def test_another_laboratory_sending_the_same_ins_gets_its_own_patient(world):
    """The same INS sent by B is B's own Patient: A's is neither matched nor changed, and the
    person record links both."""
    secured, a, b, operator, results_a, result_b = world
    patient = a.get(f"Patient/{results_a[0]['Patient']}").json()
    ins = [i for i in patient["identifier"] if "1.2.250.1.213.1.4" in i["system"]]
    if not ins:
        pytest.skip("this synthetic patient has no INS")
    body = {k: v for k, v in patient.items() if k not in ("id", "meta")}
    body["name"] = [{"use": "official", "family": "Autre", "given": ["Nom"]}]
    response = b.put("Patient", params={"identifier": f"{ins[0]['system']}|{ins[0]['value']}"}, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["id"] != patient["id"]
    assert a.get(f"Patient/{patient['id']}").json() == patient
    not_there(b.get(f"Patient/{patient['id']}"), "Patient", patient["id"])
    from fhir_server.storage.persons import Persons

    person = Persons(secured.store.db).of_patient(f"Patient/{patient['id']}")
    assert sorted(person.matched()) == sorted([f"Patient/{patient['id']}", f"Patient/{response.json()['id']}"])


def test_scopes_limit_each_interaction(world):
    secured, a, b, operator, results_a, result_b = world
    reader = secured.client_session(LAB_A, "system/Observation.read")
    mine = results_a[0]
    assert reader.get(f"Observation/{mine['Observation']}").status_code == 200
    assert ids(reader.get("Observation")) == {r["Observation"] for r in results_a}
    refused(reader.get(f"DiagnosticReport/{mine['DiagnosticReport']}"))
    refused(reader.get("DiagnosticReport"))
    refused(reader.get("Observation", params={"_include": "Observation:subject"}))  # Patient is out of scope
    refused(reader.get("Observation", params={"subject:Patient.gender": "female"}))
    refused(reader.get("_history"))
    current = reader.get(f"Observation/{mine['Observation']}").json()
    refused(reader.put(f"Observation/{mine['Observation']}", json=current))
    refused(reader.delete(f"Observation/{mine['Observation']}"))
    refused(reader.post("", json=generate_result_bundle(random.Random(5), LAB_A, include_legal_entity=False)))
    writer = secured.client_session(LAB_A, "system/Observation.cruds system/Patient.c")
    refused(writer.get("Patient"))
    assert writer.put(f"Observation/{mine['Observation']}", json=current).status_code == 200
    # SMART v2 letters: r (read by id) without s (search)
    by_id = secured.client_session(LAB_A, "system/Observation.r")
    assert by_id.get(f"Observation/{mine['Observation']}").status_code == 200
    assert by_id.get(f"Observation/{mine['Observation']}/_history").status_code == 200
    refused(by_id.get("Observation"))
    refused(by_id.get("Observation/_history"))
    # the wildcard never covers the audit log
    refused(a.get("AuditEvent"))
    assert operator.get("AuditEvent").status_code == 200


def test_audit_events_are_read_only(world):
    secured, a, b, operator, results_a, result_b = world
    event = operator.get("AuditEvent").json()["entry"][0]["resource"]
    body = {k: v for k, v in event.items() if k not in ("id", "meta")}
    refused(operator.post("AuditEvent", json=body), 405)
    refused(operator.put(f"AuditEvent/{event['id']}", json=event), 405)
    refused(operator.delete(f"AuditEvent/{event['id']}"), 405)
    refused(operator.put("AuditEvent", params={"_id": event["id"]}, json=event), 405)
    refused(operator.delete("AuditEvent", params={"_id": event["id"]}), 405)
    refused(
        operator.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": body, "request": {"method": "POST", "url": "AuditEvent"}}],
            },
        ),
        405,
    )
    assert operator.get(f"AuditEvent/{event['id']}").json() == event


def test_a_result_may_list_its_performing_site_after_itself(secured):
    session = secured.client_session(LAB_A)
    bundle = generate_result_bundle(random.Random(21), LAB_A, include_legal_entity=False)
    bundle["entry"].sort(key=lambda e: e["resource"]["resourceType"] == "Organization")  # site last
    assert bundle["entry"][-1]["resource"]["resourceType"] == "Organization"
    response = session.post("", json=bundle)
    assert response.status_code == 200, response.text
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"201 Created"}
