"""One result dossier as the FHIR resources of an SI-DEP submission, built in one place for the
web UI's form, the synthetic generator and the certificate examples.

A dossier is a ServiceRequest (the laboratory's dossier number), its Specimen (the sampling time),
the Observation (the result) and the DiagnosticReport, about one Patient, performed by the
organisations and professionals whose entries lead the transaction Bundle. Entries are conditional
on the dossier number (ServiceRequest.identifier, `-P1` for the specimen, `-<LOINC>` for the
observation), so that a resent dossier updates rather than duplicates; the Patient is conditional
on its INS when it has one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
INS_OID = "urn:oid:1.2.250.1.213.1.4."  # the INS systems (NIR, NIA, test and demonstration NIR)
ENTRIES = ("patient", "request", "specimen", "observation", "report")

try:
    from zoneinfo import ZoneInfo

    PARIS = ZoneInfo("Europe/Paris")
except Exception:  # no tz database: UTC offsets are still valid FHIR
    PARIS = UTC  # type: ignore[assignment]


def instant(moment: datetime) -> str:
    """A FHIR instant in French local time, to the second."""
    return moment.astimezone(PARIS).isoformat(timespec="seconds")


def new_full_url() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


@dataclass
class Party:
    """Who takes part in the dossier (a site, its legal entity, a professional): the entry that
    writes it and how the dossier's resources refer to it."""

    resource: dict
    method: str  # "PUT" (conditional update) or "POST" (with If-None-Exist: created when missing)
    criteria: str  # e.g. "identifier=https://finess.esante.gouv.fr|123456789"
    full_url: str = field(default_factory=new_full_url)

    def reference(self, display: str | None = None) -> dict:
        return {"reference": self.full_url, **({"display": display} if display else {})}

    def entry(self) -> dict:
        rtype = self.resource["resourceType"]
        if self.method == "POST":
            request = {"method": "POST", "url": rtype, "ifNoneExist": self.criteria}
        else:
            request = {"method": "PUT", "url": f"{rtype}?{self.criteria}"}
        return {"fullUrl": self.full_url, "resource": self.resource, "request": request}


@dataclass
class Dossier:
    system: str  # the dossier numbering system (scoped to the laboratory or professional)
    number: str
    patient: dict
    test_code: dict  # CodeableConcept (LOINC)
    specimen_type: dict  # Coding (SNOMED)
    value: dict  # {"valueCodeableConcept": ...} or {"valueQuantity": ..., "interpretation": ...}
    collected: datetime
    issued: datetime
    authored: datetime
    parties: list[Party]  # written first, in this order
    performers: list[dict]  # references to parties
    request_performers: list[dict] | None = None  # ServiceRequest.performer; default: performers
    requester: dict | None = None  # ServiceRequest.requester
    device: dict | None = None  # Observation.device (rapid antigen tests)
    status: str = "final"

    def criteria(self, suffix: str = "") -> str:
        return f"identifier={self.system}|{self.number}{suffix}"


def dossier_bundle(dossier: Dossier, full_urls: dict[str, str] | None = None) -> dict:
    """The transaction Bundle of one dossier. `full_urls`: the fullUrls of its ENTRIES, when the
    caller chooses them (a seeded generator); new urn:uuid: ones otherwise."""
    ids = full_urls or {name: new_full_url() for name in ENTRIES}
    subject = {"reference": ids["patient"]}
    identifier = {"system": dossier.system, "value": dossier.number}
    request = {
        "resourceType": "ServiceRequest",
        "identifier": [identifier],
        "status": "completed",
        "intent": "order",
        "code": dossier.test_code,
        "subject": subject,
        "authoredOn": instant(dossier.authored),
    }
    if dossier.requester:
        request["requester"] = dossier.requester
    request["performer"] = dossier.performers if dossier.request_performers is None else dossier.request_performers
    specimen = {
        "resourceType": "Specimen",
        "identifier": [{**identifier, "value": f"{dossier.number}-P1"}],
        "status": "available",
        "type": {"coding": [dossier.specimen_type]},
        "subject": subject,
        "request": [{"reference": ids["request"]}],
        "collection": {"collectedDateTime": instant(dossier.collected)},
    }
    test = dossier.test_code["coding"][0]["code"]
    observation = {
        "resourceType": "Observation",
        "identifier": [{**identifier, "value": f"{dossier.number}-{test}"}],
        "basedOn": [{"reference": ids["request"]}],
        "status": dossier.status,
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": dossier.test_code,
        "subject": subject,
        "effectiveDateTime": instant(dossier.collected),
        "issued": instant(dossier.issued),
        "performer": dossier.performers,
        "specimen": {"reference": ids["specimen"]},
        **dossier.value,
    }
    if dossier.device:
        observation["device"] = dossier.device
    report = {
        "resourceType": "DiagnosticReport",
        "identifier": [identifier],
        "basedOn": [{"reference": ids["request"]}],
        "status": dossier.status,
        "category": [{"coding": [{"system": V2_0074, "code": "LAB"}]}],
        "code": dossier.test_code,
        "subject": subject,
        "effectiveDateTime": instant(dossier.collected),
        "issued": instant(dossier.issued),
        "performer": dossier.performers,
        "specimen": [{"reference": ids["specimen"]}],
        "result": [{"reference": ids["observation"]}],
    }
    ins = next((i for i in dossier.patient.get("identifier", []) if i.get("system", "").startswith(INS_OID)), None)
    patient_request = (
        {"method": "PUT", "url": f"Patient?identifier={ins['system']}|{ins['value']}"}
        if ins
        else {"method": "POST", "url": "Patient"}
    )
    entries = [party.entry() for party in dossier.parties]
    entries.append({"fullUrl": ids["patient"], "resource": dossier.patient, "request": patient_request})
    for key, resource, suffix in (
        ("request", request, ""),
        ("specimen", specimen, "-P1"),
        ("observation", observation, f"-{test}"),
        ("report", report, ""),
    ):
        entries.append(
            {
                "fullUrl": ids[key],
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}?{dossier.criteria(suffix)}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def as_stored(bundle: dict, ids: dict[str, str], version: str = "1") -> dict[str, dict]:
    """The resources of a dossier Bundle as the server stores them (by type), with the ids `ids`
    gives each type and references rewritten: for code that reads stored resources without a
    server (certificate rendering, benchmarks)."""
    keys = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{ids[e['resource']['resourceType']]}" for e in bundle["entry"]
    }

    def rewrite(node):
        if isinstance(node, dict):
            return {k: (keys.get(v, v) if k == "reference" else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return {
        e["resource"]["resourceType"]: {
            **rewrite(e["resource"]),
            "id": ids[e["resource"]["resourceType"]],
            "meta": {"versionId": version},
        }
        for e in bundle["entry"]
    }
