"""AuditEvents: one for each access to patient data, with who (client, organisation, address),
what (patients and resources, or the query), the outcome (refused accesses included); valid R4;
searchable by patient and by agent; written off the request path; read-only (test_auth_access)."""

from __future__ import annotations

import base64
import random
import time

from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories
from profiles.base_validation import parse_errors as structure_issues

LAB_A, LAB_B = make_laboratories(random.Random(9), 2)


def post(session, lab, seed):
    response = session.post("", json=generate_result_bundle(random.Random(seed), lab, include_legal_entity=False))
    assert response.status_code == 200, response.text
    return {
        e["response"]["location"].split("/")[0]: e["response"]["location"].split("/")[1]
        for e in response.json()["entry"]
    }


def subtype(event) -> str:
    return event["subtype"][0]["code"]


def whats(event, role: str | None = None) -> set[str]:
    return {
        e["what"]["reference"]
        for e in event.get("entity", [])
        if "what" in e and (role is None or e["role"]["code"] == role)
    }


def test_each_access_to_patient_data_is_audited(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    ids = post(a, LAB_A, 1)
    patient = f"Patient/{ids['Patient']}"
    events = secured.audit_events()
    assert [subtype(e) for e in events] == ["transaction"]
    written = events[0]
    assert written["type"]["code"] == "rest" and written["action"] == "E" and written["outcome"] == "0"
    assert whats(written, "1") == {patient}
    assert {f"Observation/{ids['Observation']}", f"DiagnosticReport/{ids['DiagnosticReport']}"} <= whats(written, "4")
    agent = written["agent"][0]
    assert agent["who"]["reference"] == f"Device/{a.client_id}" and agent["altId"] == a.client_id
    assert agent["requestor"] is True and agent["network"] == {"address": "127.0.0.1", "type": "2"}
    organisation = written["agent"][1]
    assert organisation["who"]["identifier"]["value"] == LAB_A.finess and organisation["requestor"] is False
    assert written["source"]["observer"]["identifier"]["value"] == secured.base_url
    assert not structure_issues("AuditEvent", written), structure_issues("AuditEvent", written)

    # reads, searches, history, updates, deletes: one event each, coded for the interaction
    obs = f"Observation/{ids['Observation']}"
    current = a.get(obs).json()
    a.get(f"{obs}/_history/1")
    a.get(f"{obs}/_history")
    a.get("Observation", params={"subject": patient})
    a.put(obs, json=current)
    a.delete(f"Specimen/{ids['Specimen']}")
    a.get("Organization")  # not patient data: not audited
    events = secured.audit_events()[1:]
    assert [(subtype(e), e["action"], e["outcome"]) for e in events] == [
        ("read", "R", "0"),
        ("vread", "R", "0"),
        ("history-instance", "R", "0"),
        ("search-type", "E", "0"),
        ("update", "U", "0"),
        ("delete", "D", "0"),
    ]
    for event in events[:5]:
        assert patient in whats(event, "1"), event
    assert obs in whats(events[0]) and f"Specimen/{ids['Specimen']}" in whats(events[5])
    query = next(e for e in events[3]["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == f"subject=Patient%2F{ids['Patient']}"

    # refused accesses are audited too, naming the patient concerned
    count = len(secured.audit_events())
    assert b.get(obs).status_code == 404  # to B, A's observation is not there
    assert b.delete(obs).status_code == 204  # and deleting it deletes nothing
    assert secured.session(None).get(obs).status_code == 401
    refused = secured.audit_events()[count:]
    assert [(subtype(e), e["outcome"]) for e in refused] == [("read", "8"), ("delete", "8"), ("read", "8")]
    assert refused[0]["agent"][0]["altId"] == b.client_id and patient in whats(refused[0], "1")
    assert "does not belong" in refused[0]["outcomeDesc"] and "does not belong" in refused[1]["outcomeDesc"]
    assert refused[2]["agent"][0]["who"] == {"display": "anonymous"}
    assert b.get("Observation/unknown").status_code == 404
    assert secured.audit_events()[-1]["outcome"] == "4"
    for event in secured.audit_events():
        assert not structure_issues("AuditEvent", event)


def test_audit_events_are_searchable_by_patient_and_agent(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    auditor = secured.client_session(None, "system/AuditEvent.read", role="public-health")
    ids_a = post(a, LAB_A, 2)
    ids_b = post(b, LAB_B, 3)
    a.get(f"Patient/{ids_a['Patient']}")
    b.get(f"Patient/{ids_a['Patient']}")  # refused, audited
    by_patient = auditor.get("AuditEvent", params={"patient": f"Patient/{ids_a['Patient']}", "_sort": "date"})
    assert by_patient.status_code == 200, by_patient.text
    events = [e["resource"] for e in by_patient.json()["entry"]]
    assert [(subtype(e), e["outcome"], e["agent"][0]["altId"]) for e in events] == [
        ("transaction", "0", a.client_id),
        ("read", "0", a.client_id),
        ("read", "8", b.client_id),
    ]
    by_agent = auditor.get("AuditEvent", params={"agent": f"Device/{b.client_id}"})
    assert {e["resource"]["agent"][0]["altId"] for e in by_agent.json()["entry"]} == {b.client_id}
    assert len(by_agent.json()["entry"]) == 2
    by_altid = auditor.get("AuditEvent", params={"altid": b.client_id, "outcome": "8"})
    assert len(by_altid.json()["entry"]) == 1
    assert auditor.get("AuditEvent", params={"patient": f"Patient/{ids_b['Patient']}"}).json()["total"] == 1
    # a laboratory cannot read the audit log, even with system/*.read
    assert a.get("AuditEvent").status_code == 403
    # an AuditEvent read by id
    first = events[0]
    assert auditor.get(f"AuditEvent/{first['id']}").json() == first


def test_audit_events_are_buffered_off_the_request_path(secured_factory):
    server = secured_factory(audit_flush_interval=0.3)
    a = server.client_session(LAB_A)
    post(a, LAB_A, 4)
    collection = server.store.db["AuditEvent"]
    assert collection.count_documents({}) == 0  # not yet written: the request did not wait for it
    deadline = time.monotonic() + 10
    while collection.count_documents({}) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert collection.count_documents({}) == 1
    for _ in range(20):
        a.get("Patient")
    server.app.extensions["sidep.audit"].flush()
    assert collection.count_documents({}) == 21
