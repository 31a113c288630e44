"""Results as the web UI handles them, through the FHIR machinery and nothing else:

- a result entered in the form becomes a transaction Bundle shaped like a laboratory's (the
  synthetic generator's: performing site Organization, Patient, ServiceRequest with the dossier
  number, Specimen, Observation, DiagnosticReport, plus the professional as a Practitioner; a nurse
  or doctor without organisation is the sole performer, with a dossier system scoped to their
  RPPS, `https://sidep.example.fr/dossier/rpps-<RPPS>`), run by
  `interactions.transaction.run_transaction`: the same profiles, patient matching, authorisation
  write hooks and notification outbox events as a laboratory submission;
- lists are FHIR searches (`context.plan_builder` + `interactions.search.run`), reads are
  `Store.read`: both narrowed by the same policy as the API (Store.access: the organisation's or
  the professional's own results, and those of tests a professional requested);
- a correction of identity or contact details is a PUT of the Patient in a transaction (If-Match on
  the version shown): submission.py decides whether it re-notifies (contact: yes; identity: no).
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from profiles.validators import FINESS, INS_NIR, INS_SYSTEMS, RAT_DEVICES, RPPS

from ..auth import policy
from ..auth.audit import USER_SYSTEM
from ..auth.principal import Principal, requester_key
from ..context import plan_builder, settings, store
from ..dossier import LOINC, PARIS, SNOMED, Dossier, Party, dossier_bundle
from ..interactions import search as search_interaction
from ..interactions.transaction import parse_entry, run_transaction
from ..storage import Record
from ..storage.conditions import Condition, all_of, any_of
from ..synthetic import data
from ..synthetic.generator import DETECTED, FR_CORE_ID_TYPES, NOT_DETECTED
from . import forms
from .session import ROLE_DOCTOR, ROLE_NURSE, ROLE_PHARMACIST

ANTIGEN_TESTS = "https://sidep.example.fr/fhir/ValueSet/sars-cov-2-antigen-tests"
RAT_DEVICE_LIST = "https://sidep.example.fr/fhir/ValueSet/dcc-covid-19-lab-test-manufacturer-and-name"
DOSSIER_PREFIX = "https://sidep.example.fr/dossier/"
RPPS_DOSSIER_SCOPE = "rpps-"  # DOSSIER_PREFIX + "rpps-" + RPPS: the dossiers of a professional without organisation
RESULT_CODES = {"detected": DETECTED, "not-detected": NOT_DETECTED}
# Organization.type of a site, by the role of who enters the result: public-health records tell
# a pharmacy's tests from a laboratory's (fhir_server/pseudonyms.py performer_type).
SITE_TYPES = {ROLE_PHARMACIST: "Pharmacie d'officine", ROLE_NURSE: "Cabinet infirmier", ROLE_DOCTOR: "Cabinet médical"}
LABORATORY_SITE_TYPE = "Laboratoire de biologie médicale"
RESULT_LABELS = {DETECTED: "Positif", NOT_DETECTED: "Négatif", "419984006": "Non concluant"}
SEX_LABELS = dict(forms.SEXES)
PAGE = 50


# -- code lists ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def antigen_tests() -> dict:
    """LOINC code -> concept: the antigen tests of the terminology service (test level only)."""
    from terminology.service import get_service

    return {c.code: c for c in get_service().members(ANTIGEN_TESTS) if c.properties.get("level") == "test"}


@lru_cache(maxsize=1)
def rat_devices() -> dict:
    from terminology.service import get_service

    return {
        c.code: c
        for c in sorted(get_service().members(RAT_DEVICE_LIST), key=lambda c: c.display or c.code)
        if c.properties.get("status") != "inactive"
    }


def label(concept) -> str:
    return concept.designations.get("fr") or concept.display


def _snomed(code: str) -> dict:
    from terminology.service import get_service

    concept = get_service().concept(SNOMED, code)
    return {"system": SNOMED, "code": code, "display": concept.display if concept else code}


# -- who enters -------------------------------------------------------------------------------------
def practitioner_identifier(principal: Principal) -> dict:
    """The professional as an identifier: their RPPS, else their login on this platform."""
    if principal.rpps:
        return {"system": RPPS, "value": principal.rpps}
    return {"system": USER_SYSTEM, "value": principal.id}


def practitioner_reference(principal: Principal) -> str | None:
    """Practitioner/<id> of the professional, once they have entered a result (None before)."""
    ident = practitioner_identifier(principal)
    plan = plan_builder().build("Practitioner", [("identifier", f"{ident['system']}|{ident['value']}")])
    found = store().find("Practitioner", plan.filter, limit=1, projection={"_id": 1})
    return f"Practitioner/{found[0]['_id']}" if found else None


def can_enter(principal: Principal) -> str | None:
    """Why this principal cannot enter a result through the form (None: it can): a professional
    enters for a structure (FINESS juridique and a site), or in their own name (RPPS)."""
    if principal.organisation and not principal.sites:
        return (
            "La saisie d'un résultat au nom d'une structure nécessite l'un de ses sites (FINESS "
            "géographique) : votre compte n'en a pas. Demandez-en le rattachement à un opérateur."
        )
    if not principal.organisation and not principal.rpps:
        return (
            "La saisie d'un résultat est rattachée à une structure (FINESS juridique et site FINESS "
            "géographique) ou à votre numéro RPPS : votre compte n'a ni l'un ni l'autre."
        )
    return None


def dossier_system(principal: Principal) -> str:
    """Where the dossiers entered by this principal are numbered: its organisation, else its RPPS."""
    if principal.organisation:
        return DOSSIER_PREFIX + principal.organisation
    return DOSSIER_PREFIX + RPPS_DOSSIER_SCOPE + principal.rpps


def requested_by(record: Record, principal: Principal) -> bool:
    """Did this professional request the test (the policy made its results readable to them)?"""
    return bool(principal.rpps) and requester_key(principal.rpps) in (record.owner or [])


# -- the new-result Bundle -------------------------------------------------------------------------
@dataclass
class Built:
    bundle: dict
    dossier: str


def result_bundle(principal: Principal, values: dict, site: str | None, now: datetime | None = None) -> Built:
    """`site`: the FINESS géographique where the test was done; None for a professional without
    organisation, who is then the only performer. The site and the professional are created when
    missing, never overwritten by the form."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    test = antigen_tests()[values["test"]]
    collected = forms.sampling_time(values["sampled_at"])
    parties = []
    performers = []
    if principal.organisation:
        site_party = Party(site_organization(principal, site), "POST", f"identifier={FINESS}|{site}")
        parties.append(site_party)
        performers.append(site_party.reference(site_party.resource["name"]))
    ident = practitioner_identifier(principal)
    family, _, given = principal.name.rpartition(" ")
    practitioner = Party(
        {
            "resourceType": "Practitioner",
            "identifier": [ident],
            "active": True,
            "name": [{"text": principal.name, **({"family": family, "given": [given]} if family else {})}],
        },
        "POST",
        f"identifier={ident['system']}|{ident['value']}",
    )
    parties.append(practitioner)
    performers.append(practitioner.reference(principal.name))
    specimen_code = data.SPECIMEN_FOR_CODE.get(test.code) or data.SPECIMENS_BY_KIND["antigen"][0][0]
    device = None
    if values.get("device"):
        chosen = rat_devices()[values["device"]]
        device = {"identifier": {"system": RAT_DEVICES, "value": chosen.code}, "display": chosen.display}
    dossier = Dossier(
        system=dossier_system(principal),
        number=f"{collected:%y%m%d}{secrets.randbelow(10**9):09d}",
        patient=patient_resource(values),
        test_code={"coding": [{"system": LOINC, "code": test.code, "display": test.display}], "text": label(test)},
        specimen_type=_snomed(specimen_code),
        value={"valueCodeableConcept": {"coding": [_snomed(RESULT_CODES[values["result"]])]}},
        collected=collected,
        issued=now,
        authored=collected,
        parties=parties,
        performers=performers,
        request_performers=performers[:1],
        requester=practitioner.reference(principal.name),
        device=device,
    )
    return Built(dossier_bundle(dossier), dossier.number)


def site_organization(principal: Principal, site: str | None) -> dict:
    org_name = principal.organisation_name or f"Structure FINESS {principal.organisation}"
    return {
        "resourceType": "Organization",
        "identifier": [
            {
                "use": "official",
                "system": FINESS,
                "value": site,
                "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": "FINEG"}]},
            }
        ],
        "active": True,
        "type": [{"text": SITE_TYPES.get(principal.role, LABORATORY_SITE_TYPE)}],
        "name": org_name if len(principal.sites) == 1 else f"{org_name} — site {site}",
        "partOf": {"identifier": {"system": FINESS, "value": principal.organisation}, "display": org_name},
    }


def patient_resource(values: dict, current: dict | None = None) -> dict:
    """A Patient from the form's identity and contact fields; with `current`, that Patient
    corrected (what the form does not show is kept)."""
    patient = copy.deepcopy(current) if current else {"resourceType": "Patient"}
    identifiers = [i for i in patient.get("identifier", []) if i.get("system") not in INS_SYSTEMS]
    kept_ins = [
        i
        for i in (current or {}).get("identifier", [])
        if i.get("system") in INS_SYSTEMS and i.get("value") == values.get("ins")
    ]
    if kept_ins:
        identifiers = kept_ins + identifiers
    elif values.get("ins"):
        identifiers.insert(
            0,
            {
                "use": "official",
                "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": "INS-NIR"}]},
                "system": INS_NIR,
                "value": values["ins"],
            },
        )
    if identifiers:
        patient["identifier"] = identifiers
    else:
        patient.pop("identifier", None)
    official = {"use": "official", "family": values["family"], "given": values["given"].split()}
    others = [n for n in patient.get("name", []) if n.get("use") != "official"]
    patient["name"] = [official] + others
    telecom = [t for t in patient.get("telecom", []) if t.get("system") not in ("phone", "sms", "email")]
    if values.get("phone"):
        telecom.insert(0, {"system": "phone", "value": values["phone"], "use": "mobile"})
    if values.get("email"):
        telecom.append({"system": "email", "value": values["email"]})
    if telecom:
        patient["telecom"] = telecom
    else:
        patient.pop("telecom", None)
    patient["gender"] = values["sex"]
    patient["birthDate"] = values["birth_date"]
    return patient


def submit(bundle: dict) -> dict:
    """Run a transaction Bundle exactly as POST [base] does; raises FhirError when refused."""
    entries = [parse_entry(i, raw) for i, raw in enumerate(bundle["entry"])]
    return run_transaction(entries)


def correct_patient(record: Record, values: dict) -> tuple[dict, bool]:
    """PUT the corrected Patient (If-Match: the version the form showed). Returns (the
    transaction-response, whether the contact details changed: the patient is notified again)."""
    corrected = patient_resource(values, record.resource)
    corrected["id"] = record.id
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{settings().base_url}/Patient/{record.id}",
                "resource": corrected,
                "request": {"method": "PUT", "url": f"Patient/{record.id}", "ifMatch": f'W/"{record.version}"'},
            }
        ],
    }
    response = submit(bundle)
    stored = response["entry"][0].get("resource") or corrected  # the stored form (phones in E.164)
    return response, contact(record.resource) != contact(stored)


def contact(patient: dict | None) -> list:
    return sorted(
        (t.get("system", ""), t.get("value", ""))
        for t in (patient or {}).get("telecom", [])
        if t.get("system") in ("phone", "sms", "email")
    )


# -- reading ---------------------------------------------------------------------------------------
def search_reports(
    name: str = "", birth_date: str = "", dossier: str = "", mine: Principal | None = None
) -> tuple[dict, list[dict]]:
    """A FHIR search of DiagnosticReports (their patients and results included); returns (the
    searchset Bundle, one row per report for the page). `mine`: only the reports this professional
    entered (performer) or requested."""
    pairs = [
        ("_include", "DiagnosticReport:subject"),
        ("_include", "DiagnosticReport:result"),
        ("_sort", "-date"),
        ("_count", str(PAGE)),
    ]
    if name:
        pairs.append(("patient.name", name))
    if birth_date:
        pairs.append(("patient.birthdate", birth_date))
    if dossier:
        pairs.append(("identifier", dossier))
    plan = plan_builder().build("DiagnosticReport", pairs)
    if mine is not None:
        plan.filter = all_of(plan.filter, mine_condition(mine))
    bundle = search_interaction.run(plan)
    included = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "include"
    }
    rows = []
    for e in bundle.get("entry", []):
        report = e["resource"]
        if e.get("search", {}).get("mode") != "match" or report.get("resourceType") != "DiagnosticReport":
            continue
        patient = included.get((report.get("subject") or {}).get("reference", ""))
        observations = [included.get(r.get("reference", "")) for r in report.get("result", [])]
        rows.append(row(report, patient, [o for o in observations if o]))
    return bundle, rows


def mine_condition(principal: Principal) -> Condition:
    """Reports this professional entered (performer: their Practitioner) or requested (policy)."""
    practitioner = practitioner_reference(principal)
    entered = plan_builder().build("DiagnosticReport", [("performer", practitioner)]).filter if practitioner else None
    return any_of(entered or {}, policy.requested(principal) or {})


def row(report: dict, patient: dict | None, observations: list[dict]) -> dict:
    return {
        "id": report["id"],
        "dossier": dossier_number(report),
        "date": when(report.get("effectiveDateTime")),
        "test": (report.get("code") or {}).get("text") or _code(report.get("code")),
        "result": ", ".join(result_label(o) for o in observations) or "—",
        "patient": patient_name(patient),
        "birth_date": french_date((patient or {}).get("birthDate")),
        "status": report.get("status"),
    }


def read_result(report_id: str) -> dict:
    """The report and what it refers to, each read through the store (access checked)."""
    db = store()
    report = db.read("DiagnosticReport", report_id)
    found = {"report": report, "patient": None, "observations": [], "specimens": [], "requests": []}
    subject = (report.resource.get("subject") or {}).get("reference", "")
    if subject.startswith("Patient/"):
        found["patient"] = db.read("Patient", subject.split("/")[1])
    for key, element, rtype in (
        ("observations", "result", "Observation"),
        ("specimens", "specimen", "Specimen"),
        ("requests", "basedOn", "ServiceRequest"),
    ):
        for ref in report.resource.get(element, []):
            target = ref.get("reference", "")
            if target.startswith(f"{rtype}/"):
                found[key].append(db.read(rtype, target.split("/")[1]))
    return found


def certificate_pdf(report_id: str):
    """The PDF `$generate-certificate` answers for this report (operations/generate_certificate.py),
    from the resources as the user may read them. Raises FhirError (409, 410, 422) as the API does."""
    from operations.certificates.keys import load_keyring
    from operations.generate_certificate import load_result_resources, render, var_dir

    resources = load_result_resources(store(), "DiagnosticReport", report_id)
    return render(resources, "pdf", None, report_id, load_keyring(var_dir()))


def as_bundle(found: dict) -> dict:
    """What a page showed, as a collection Bundle (for its AuditEvent)."""
    records = [found["report"], found["patient"], *found["observations"], *found["specimens"], *found["requests"]]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r.resource} for r in records if r is not None],
    }


def entered_by(report: dict, practitioner: str | None) -> bool:
    return bool(practitioner) and practitioner in [p.get("reference") for p in report.get("performer", [])]


# -- display helpers -------------------------------------------------------------------------------
def dossier_number(report: dict) -> str:
    return next(
        (
            i.get("value", "")
            for i in report.get("identifier", [])
            if str(i.get("system", "")).startswith(DOSSIER_PREFIX)
        ),
        "",
    )


def result_label(observation: dict) -> str:
    codings = (observation.get("valueCodeableConcept") or {}).get("coding") or []
    for coding in codings:
        if coding.get("code") in RESULT_LABELS:
            return RESULT_LABELS[coding["code"]]
    quantity = observation.get("valueQuantity")
    if quantity:
        return f"{quantity.get('value')} {quantity.get('unit', '')}".strip()
    return codings[0].get("display", "—") if codings else "—"


def _code(concept: dict | None) -> str:
    codings = (concept or {}).get("coding") or []
    return codings[0].get("display") or codings[0].get("code", "") if codings else ""


def official_name(patient: dict | None) -> dict:
    names = (patient or {}).get("name") or []
    return next((n for n in names if n.get("use") == "official"), names[0] if names else {})


def patient_name(patient: dict | None) -> str:
    name = official_name(patient)
    return f"{(name.get('family') or '').upper()} {' '.join(name.get('given') or [])}".strip() or "—"


def french_date(value: str | None) -> str:
    if not value or len(value) < 10:
        return value or ""
    return f"{value[8:10]}/{value[5:7]}/{value[:4]}"


def when(value: str | None) -> str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo:
        moment = moment.astimezone(PARIS)
    return moment.strftime("%d/%m/%Y %H:%M")


def form_values(patient: dict) -> dict:
    """The correction form's fields from a stored Patient."""
    name = official_name(patient)
    telecom = patient.get("telecom", [])
    return {
        "family": name.get("family", ""),
        "given": " ".join(name.get("given") or []),
        "birth_date": patient.get("birthDate", ""),
        "sex": patient.get("gender", ""),
        "ins": next((i.get("value", "") for i in patient.get("identifier", []) if i.get("system") in INS_SYSTEMS), ""),
        "phone": next((t.get("value", "") for t in telecom if t.get("system") in ("phone", "sms")), ""),
        "email": next((t.get("value", "") for t in telecom if t.get("system") == "email"), ""),
    }
