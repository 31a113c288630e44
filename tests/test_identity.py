"""One person across laboratories, and no laboratory rewriting another's results.

Laboratory B, knowing only the NIR of one of laboratory A's patients, sends results with that NIR
and another name, phone, e-mail and address, on every write path (transaction, batch, plain and
conditional create and update, the web UI's form): what A's results show — A's Patient, A's
certificate, where A's notifications go — does not change; B gets its own Patient, and the person
record links both by INS. An INS that arrives with another birth date or sex is a conflict
operators see, never a merge. Conditional matches and references never reach what the caller may
not see, and answer as for what does not exist."""

from __future__ import annotations

import dataclasses
import random

import pytest
import requests

from fhir_server.identity import CONFLICT_EVENT
from fhir_server.storage.persons import CONFLICT, MATCH, Persons
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person
from operations.certificates.hcert import decode_and_verify

from .test_auth_access import LAB_A, LAB_B, Posted, post_bundle

BOUND = ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport")
NIR = "urn:oid:1.2.250.1.213.1.4.8"


def person_with_nir(seed: int):
    """A synthetic person who has a NIR (most have; the generator also makes NIA and none)."""
    rng = random.Random(seed)
    while True:
        person = make_person(rng)
        if person.ins and person.ins_system == NIR:
            return person


def impostor(person, seed: int, same_traits: bool = True):
    """Someone else's name, phone, e-mail and address with `person`'s NIR (and, unless told
    otherwise, their birth date and sex)."""
    other = make_person(random.Random(seed))
    while other.sex != person.sex:
        seed += 1
        other = make_person(random.Random(seed))
    kept = {"ins": person.ins, "ins_system": person.ins_system}
    if same_traits:
        kept.update(birth_date=person.birth_date, sex=person.sex)
    return dataclasses.replace(other, **kept)


def a_view(secured, session, posted: Posted) -> dict:
    """Everything A's results show: A's stored documents of patient data, what A reads of them,
    A's certificate, and the notifications queued for A's reports."""
    db = secured.store.db
    docs = {rtype: sorted(db[rtype].find({"org": LAB_A.finess}), key=lambda d: d["_id"]) for rtype in BOUND}
    reads = {rtype: session.get(f"{rtype}/{posted[rtype]}").json() for rtype in BOUND}
    hc1 = session.get(
        f"DiagnosticReport/{posted['DiagnosticReport']}/$generate-certificate", headers={"Accept": "text/plain"}
    ).text
    trust = requests.get(secured.base_url.rsplit("/fhir", 1)[0] + "/trust-list", timeout=10).json()
    certificate = decode_and_verify(hc1, trust, check_expiry=False).payload  # what it certifies, not its dates
    events = sorted(
        (e["kind"], e["payload"].get("report"), e["payload"].get("patient"))
        for e in db["_outbox"].find({"payload.report": {"$in": list(docs_ids(docs, "DiagnosticReport"))}})
    )
    return {"docs": docs, "reads": reads, "certificate": certificate, "events": events}


def docs_ids(docs: dict, rtype: str) -> set[str]:
    return {d["_id"] for d in docs[rtype]}


@pytest.fixture
def labs(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    person = person_with_nir(41)
    return secured, a, b, person, post_bundle(a, LAB_A, 42, person)


def b_patient(person, seed: int = 7, same_traits: bool = True) -> dict:
    bundle = generate_result_bundle(
        random.Random(seed), LAB_B, person=impostor(person, seed, same_traits), include_legal_entity=False
    )
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def b_bundle(person, seed: int, kind: str = "transaction", same_traits: bool = True) -> dict:
    bundle = generate_result_bundle(
        random.Random(seed), LAB_B, person=impostor(person, seed, same_traits), include_legal_entity=False
    )
    return {**bundle, "type": kind}


WRITE_PATHS = {
    "transaction": lambda b, person: b.post("", json=b_bundle(person, 8)),
    "batch": lambda b, person: b.post("", json=_patient_batch(person)),
    "create": lambda b, person: b.post("Patient", json=b_patient(person, 10)),
    "conditional create": lambda b, person: b.post(
        "Patient", json=b_patient(person, 11), headers={"If-None-Exist": f"identifier={NIR}|{person.ins}"}
    ),
    "conditional update": lambda b, person: b.put(
        "Patient", params={"identifier": f"{NIR}|{person.ins}"}, json=b_patient(person, 12)
    ),
    "transaction, conditional reference": lambda b, person: b.post(
        "", json=_subject_by_nir(b_bundle(person, 13), person)
    ),
}


def _patient_batch(person) -> dict:
    """A batch (whose entries can't refer to one another) of B's Patient with A's NIR, conditional
    on the NIR then sent again plainly."""
    patient = b_patient(person, 9)
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient, "request": {"method": "PUT", "url": f"Patient?identifier={NIR}|{person.ins}"}},
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
        ],
    }


def _subject_by_nir(bundle: dict, person) -> dict:
    """B's bundle whose results name their patient as `Patient?identifier=<NIR>` (after its Patient entry)."""
    patient_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    for entry in bundle["entry"]:
        if entry["resource"].get("subject", {}).get("reference") == patient_url:
            entry["resource"]["subject"] = {"reference": f"Patient?identifier={NIR}|{person.ins}"}
    return bundle


@pytest.mark.parametrize("path", list(WRITE_PATHS))
def test_another_laboratory_s_writes_change_nothing_of_what_a_s_results_show(labs, path):
    secured, a, b, person, posted = labs
    before = a_view(secured, a, posted)
    response = WRITE_PATHS[path](b, person)
    assert response.status_code in (200, 201, 404), response.text
    assert a_view(secured, a, posted) == before
    db = secured.store.db
    theirs = list(db["Patient"].find({"org": LAB_B.finess}))
    if path == "transaction, conditional reference":
        # the conditional reference resolves only among B's own patients: none yet, so not found
        assert response.status_code == 404 and "matches no resource" in response.text
        assert theirs == []
        return
    if path == "batch":
        assert all(e["response"]["status"][:3] in ("200", "201") for e in response.json()["entry"]), response.text
    assert len(theirs) == 1 and not set(theirs[0]["org"]) & {LAB_A.finess}
    # one person, two laboratories' own Patients
    person_record = Persons(db).of_patient(f"Patient/{posted['Patient']}")
    assert sorted(person_record.matched()) == sorted([f"Patient/{posted['Patient']}", f"Patient/{theirs[0]['_id']}"])


def test_a_professional_s_form_with_a_laboratory_s_nir_makes_the_professional_s_own_patient(labs):
    secured, a, b, person, posted = labs
    from .test_web_ui import PHARMACY_B, Web, add_user, result_form

    users = secured.app.extensions["sidep.users"]
    add_user(users, "pharma", lab=PHARMACY_B)
    before = a_view(secured, a, posted)
    web = Web(secured.app).signed_in("pharma")
    form = result_form(
        PHARMACY_B,
        family="Usurpe",
        given="Nom",
        ins=person.ins,
        sex=person.sex,
        birth_date=person.birth_date.isoformat(),
        phone="0698765432",
        email="autre@example.org",
    )
    response = web.enter(form)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert a_view(secured, a, posted) == before
    linked = Persons(secured.store.db).of_patient(f"Patient/{posted['Patient']}")
    assert len(linked.matched()) == 2


def test_b_s_results_with_a_s_nir_notify_b_s_contact_and_certify_b_s_identity(labs):
    secured, a, b, person, posted = labs
    response = b.post("", json=b_bundle(person, 8))
    assert response.status_code == 200, response.text
    report = next(
        e["response"]["location"].split("/")[1]
        for e in response.json()["entry"]
        if e["response"]["location"].startswith("DiagnosticReport/")
    )
    patient_b = b.get(f"DiagnosticReport/{report}").json()["subject"]["reference"]
    assert patient_b != f"Patient/{posted['Patient']}"
    event = secured.store.db["_outbox"].find_one({"payload.report": report})
    assert event["payload"]["patient"] == patient_b
    certificate = b.get(f"DiagnosticReport/{report}/$generate-certificate", headers={"Accept": "text/plain"})
    assert certificate.status_code == 200
    names = b.get(patient_b).json()["name"][0]
    assert names["family"] != person.family


def test_an_ins_with_another_birth_date_is_a_conflict_operators_see_not_a_merge(labs):
    secured, a, b, person, posted = labs
    db = secured.store.db
    response = b.post("Patient", json=b_patient(person, 20, same_traits=False))
    assert response.status_code == 201, response.text
    theirs = f"Patient/{response.json()['id']}"
    record = Persons(db).of_patient(f"Patient/{posted['Patient']}")
    assert record.matched() == [f"Patient/{posted['Patient']}"]
    link = record.link_of(theirs)
    assert link.state == CONFLICT and "birthDate" in link.differs and link.org == LAB_B.finess
    assert [p.id for p in Persons(db).with_conflicts()] == [record.id]
    event = db["_outbox"].find_one({"kind": CONFLICT_EVENT})
    assert event["payload"] == {"person": record.id, "patient": theirs, "differs": link.differs}
    assert person.birth_date.isoformat() not in str(event)  # no identity in the event
    # B corrects its Patient: the link becomes a match, and the conflict is gone
    corrected = {**response.json(), "birthDate": person.birth_date.isoformat(), "gender": person.sex}
    assert b.put(theirs, json=corrected).status_code == 200
    assert Persons(db).of_patient(theirs).link_of(theirs).state == MATCH
    assert Persons(db).with_conflicts() == []


def test_the_only_source_corrects_the_person_and_a_patient_leaves_its_person(labs):
    secured, a, b, person, posted = labs
    db = secured.store.db
    mine = f"Patient/{posted['Patient']}"
    patient = a.get(mine).json()
    assert a.put(mine, json={**patient, "birthDate": "1970-01-01"}).status_code == 200
    record = Persons(db).of_patient(mine)
    assert record.birth_date == "1970-01-01" and record.link_of(mine).state == MATCH
    # without its INS, the Patient leaves the person record
    without = {**a.get(mine).json(), "identifier": [i for i in patient["identifier"] if i["system"] != NIR]}
    if not without["identifier"]:
        del without["identifier"]
    assert a.put(mine, json=without).status_code == 200
    assert Persons(db).of_patient(mine) is None


def test_conditional_operations_on_another_s_nir_answer_as_no_match(labs):
    secured, a, b, person, posted = labs
    db = secured.store.db
    unknown_nir = person_with_nir(99).ins
    for nir in (person.ins, unknown_nir):
        response = b.delete("Patient", params={"identifier": f"{NIR}|{nir}"})
        assert response.status_code == 204 and response.text == "", response.text
    assert a.get(f"Patient/{posted['Patient']}").status_code == 200
    # a transaction naming its subject by NIR: the same answer for A's patient and for nobody
    answers = []
    for nir in (person.ins, unknown_nir):
        bundle = generate_result_bundle(random.Random(5), LAB_B, include_legal_entity=False)
        patient_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
        for entry in bundle["entry"]:
            if entry["resource"].get("subject", {}).get("reference") == patient_url:
                entry["resource"]["subject"] = {"reference": f"Patient?identifier={NIR}|{nir}"}
        response = b.post("", json=bundle)
        assert response.status_code == 404, response.text
        assert posted["Patient"] not in response.text
        answers.append(response.json()["issue"][0]["diagnostics"].replace(nir, "<NIR>"))
    assert answers[0] == answers[1]
    assert db["Patient"].count_documents({"org": LAB_B.finess}) == 0


def test_a_transaction_is_authorised_on_the_state_the_whole_bundle_produces(secured):
    """The performing site is a conditional PUT (processed after POSTs) and the ServiceRequest a
    POST naming it: the performer check sees the site the Bundle writes."""
    session = secured.client_session(LAB_A)
    bundle = generate_result_bundle(random.Random(31), LAB_A, include_legal_entity=False)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            entry["request"] = {"method": "POST", "url": "ServiceRequest"}
    response = session.post("", json=bundle)
    assert response.status_code == 200, response.text
    # and a Bundle that never names one of the laboratory's sites is refused, located at its entry
    other = generate_result_bundle(random.Random(32), LAB_B, include_legal_entity=False)
    response = session.post("", json=other)
    assert response.status_code == 403
    assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[")


def test_business_identifiers_are_unique(secured):
    session = secured.client_session(LAB_A)
    site = next(
        e["resource"]
        for e in generate_result_bundle(random.Random(3), LAB_A, include_legal_entity=False)["entry"]
        if e["resource"]["resourceType"] == "Organization"
    )
    first = session.post("Organization", json=site)
    assert first.status_code == 201, first.text
    again = session.post("Organization", json={**site, "name": site["name"] + " (bis)"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # another id claiming the same FINESS: refused, naming the identifier
    second = session.put("Organization/un-autre-site", json={**site, "id": "un-autre-site"})
    assert second.status_code == 409 and site["identifier"][0]["value"] in second.text
    assert secured.store.db["Organization"].count_documents({"del": False}) == 1
    # the submissions that conditionally update the site keep working
    bundle = generate_result_bundle(random.Random(3), LAB_A, include_legal_entity=False)
    assert session.post("", json=bundle).status_code == 200
    # a dossier number sent again in a plain create is the same ServiceRequest
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    stored = session.get(
        "ServiceRequest",
        params={"identifier": f"{request['identifier'][0]['system']}|{request['identifier'][0]['value']}"},
    ).json()
    rid = stored["entry"][0]["resource"]["id"]
    body = {**stored["entry"][0]["resource"], "status": "revoked"}
    body.pop("id")
    body.pop("meta")
    resent = session.post("ServiceRequest", json=body)
    assert resent.status_code == 200 and resent.json()["id"] == rid
    assert secured.store.db["ServiceRequest"].count_documents({}) == 1


def test_the_database_refuses_a_second_holder(secured):
    """Even written around the API, a business identifier has one holder."""
    from pymongo.errors import DuplicateKeyError

    collection = secured.store.db["Organization"]
    collection.insert_one({"_id": "x1", "k": ["Organization|https://finess.esante.gouv.fr|123456789"]})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": "x2", "k": ["Organization|https://finess.esante.gouv.fr|123456789"]})


def test_another_laboratory_is_not_reachable_through_its_patients_links(labs):
    """B's own Patient linked to A's by the person record reads none of A's results."""
    secured, a, b, person, posted = labs
    response = b.post("", json=b_bundle(person, 8))
    assert response.status_code == 200
    for rtype in BOUND:
        assert b.get(rtype, params={"_id": posted[rtype]}).json().get("total", 0) == 0
    everything_b = b.get("DiagnosticReport", params={"subject:Patient.identifier": f"{NIR}|{person.ins}"}).json()
    assert {e["resource"]["id"] for e in everything_b.get("entry", [])} & {posted["DiagnosticReport"]} == set()


LABS = make_laboratories(random.Random(7), 2)
assert (LABS[0].finess, LABS[1].finess) == (LAB_A.finess, LAB_B.finess)


def test_operators_see_identity_conflicts_in_the_console_and_the_command(labs, mongo_uri):
    import os
    import subprocess
    import sys

    from .test_web_ui import Web, add_user, text

    secured, a, b, person, posted = labs
    response = b.post("Patient", json=b_patient(person, 20, same_traits=False))
    theirs = f"Patient/{response.json()['id']}"
    users = secured.app.extensions["sidep.users"]
    add_user(users, "operatrice", role="operator", lab=None)
    page = text(Web(secured.app).signed_in("operatrice").get("/ui/operator"))
    assert "Personnes en conflit 1" in page and theirs in page and f"Patient/{posted['Patient']}" in page
    assert "date de naissance" in page and person.birth_date.isoformat() not in page
    env = dict(os.environ, MONGODB_URI=mongo_uri, MONGODB_DB=secured.settings.mongodb_db)
    listed = subprocess.run(
        [sys.executable, "-m", "fhir_server", "persons", "--conflicts"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "1 person record(s) with an identity conflict" in listed.stdout
    assert f"{theirs}  {LAB_B.finess}  conflict  birthDate" in listed.stdout
    assert person.ins not in listed.stdout and person.birth_date.isoformat() not in listed.stdout


def test_a_reference_to_another_s_patient_answers_as_a_missing_one_on_every_path(labs):
    secured, a, b, person, posted = labs
    theirs, nobody = f"Patient/{posted['Patient']}", f"Patient/{posted['Patient'][:-4]}ffff"
    site_b = b.post("", json=generate_result_bundle(random.Random(3), LAB_B, include_legal_entity=False))
    site = next(
        e["response"]["location"].split("/_history")[0]
        for e in site_b.json()["entry"]
        if e["response"]["location"].startswith("Organization/")
    )

    def observation(subject: str) -> dict:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "test"},
            "subject": {"reference": subject},
            "performer": [{"reference": site}],
        }

    def answers(send) -> list:
        found = []
        for ref in (theirs, nobody):
            response = send(observation(ref))
            assert response.status_code == 404, response.text
            found.append(
                (
                    response.json()["issue"][0]["diagnostics"].replace(ref, "<ref>"),
                    response.json()["issue"][0].get("expression"),
                )
            )
        return found

    created = answers(lambda body: b.post("Observation", json=body))
    assert created[0] == created[1]
    in_bundle = answers(
        lambda body: b.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": body, "request": {"method": "POST", "url": "Observation"}}],
            },
        )
    )
    assert in_bundle[0] == in_bundle[1]
    absolute = answers(
        lambda body: b.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {
                            **body,
                            "subject": {"reference": f"{secured.base_url}/{body['subject']['reference']}"},
                        },
                        "request": {"method": "POST", "url": "Observation"},
                    }
                ],
            },
        )
    )
    assert absolute[0] == absolute[1]
