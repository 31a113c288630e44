"""The signed-in person's results, as the platform reads them (the store without access control:
the portal, not a laboratory, is acting), their certificates, and the AuditEvent of each access.

The person is the signed-in Patients plus, for a deep link, the other laboratories' Patients that
the person record links to them as `match` (never a `conflict`: an identity a laboratory got
wrong is not the person's). A result is one of theirs when its DiagnosticReport's subject is one
of them, it is final, and it was sampled within RESULT_RETENTION_MONTHS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from dateutil.relativedelta import relativedelta
from flask import current_app

from operations.certificates.facts import LOINC, facts_from_resources, kind_of_loinc
from operations.certificates.generate import CertificateSet
from operations.certificates.keys import load_keyring
from operations.certificates.pdf import render_pdf
from operations.generate_certificate import load_result_resources, render

from ..notifications import effective_time
from ..outcome import FhirError
from ..search.dates import utc_now
from ..storage import Record, Store
from ..storage.persons import MATCH, Persons
from .session import PortalSession

log = logging.getLogger(__name__)
WALLET = "https://bonjour.tousanticovid.gouv.fr/app/walletdcc#"


@dataclass
class Result:
    report: Record
    patient: str  # Patient id
    sampled: datetime  # naive UTC
    kind: str  # naat | antigen | serology | unknown
    value: str  # detected | not-detected | inconclusive | unknown
    lab: str | None

    @property
    def label(self) -> str:
        """The laboratory's own name of the test (shown when its kind is not known here)."""
        return (self.report.resource.get("code") or {}).get("text") or ""

    @property
    def id(self) -> str:
        return self.report.id

    @property
    def owners(self) -> list[str]:
        return list(self.report.owner or [])


def store() -> Store:
    return current_app.extensions["sidep.store"]


def persons() -> Persons:
    return current_app.extensions["sidep.portal.persons"]


def patients_of(session: PortalSession) -> list[str]:
    """The Patient ids whose results the person sees."""
    found = list(dict.fromkeys(session.patients))
    if session.method != "deep-link":
        return found
    for patient in list(found):
        person = persons().of_patient(f"Patient/{patient}")
        own = person.link_of(f"Patient/{patient}") if person else None
        if own is None or own.state != MATCH:
            continue
        for reference in person.matched():
            other = reference.split("/", 1)[1]
            if other not in found:
                found.append(other)
    return found


def results_of(session: PortalSession, now: datetime | None = None) -> list[Result]:
    """The person's results of the retention period, newest first."""
    from ..submission import FINAL_STATUSES

    months = current_app.config["SETTINGS"].result_retention_months
    since = (now or utc_now()) - relativedelta(months=months)
    subjects = [f"Patient/{p}" for p in patients_of(session)]
    if not subjects:
        return []
    docs = store().find("DiagnosticReport", {"s.subject": {"$in": subjects}, "del": False})
    found = []
    for doc in docs:
        report = Record.from_doc("DiagnosticReport", doc)
        if report.resource.get("status") not in FINAL_STATUSES:
            continue
        result = _result(report)
        if result is not None and result.sampled >= since:
            found.append(result)
    return sorted(found, key=lambda r: r.sampled, reverse=True)


def result_of(session: PortalSession, report_id: str) -> Result | None:
    """One of the person's results by its DiagnosticReport id; None for any other id."""
    return next((r for r in results_of(session) if r.id == report_id), None)


def _result(report: Record) -> Result | None:
    subject = ((report.resource.get("subject") or {}).get("reference") or "").split("/")
    if len(subject) != 2 or subject[0] != "Patient":
        return None
    try:
        facts = facts_from_resources(**load_result_resources(store(), "DiagnosticReport", report.id))
    except FhirError:  # not certifiable: still the person's result, shown with what the report says
        sampled = effective_time(report.resource)
        return Result(report, subject[1], sampled, _kind(report), "unknown", None) if sampled else None
    sampled = facts.sampled_at.astimezone(UTC).replace(tzinfo=None)
    return Result(report, subject[1], sampled, facts.test_kind, facts.result, facts.lab_name)


def _kind(report: Record) -> str:
    """The kind of test by the report's LOINC code (naat, antigen, serology), else "unknown"."""
    for coding in (report.resource.get("code") or {}).get("coding") or []:
        kind = kind_of_loinc(coding.get("code") or "") if coding.get("system") == LOINC else None
        if kind:
            return kind
    return "unknown"


# -- certificates ---------------------------------------------------------------------------------
def _keyring():
    return load_keyring(current_app.config["SETTINGS"].var_dir)


def pdf(result: Result) -> bytes:
    """The certificate PDF; for a result without EU certificate, the result sheet alone."""
    resources = load_result_resources(store(), "DiagnosticReport", result.id)
    try:
        return render(resources, "pdf", None, result.id, _keyring()).body
    except FhirError as error:
        if error.status != 422:
            raise
        return render_pdf(CertificateSet(facts_from_resources(**resources), (), datetime.now(UTC)))


def hc1(result: Result) -> str | None:
    """The test certificate's HC1 string, None when the result gives no EU certificate."""
    resources = load_result_resources(store(), "DiagnosticReport", result.id)
    try:
        text = render(resources, "text", None, result.id, _keyring()).body.decode()
    except FhirError:
        return None
    return text.splitlines()[0] if text.strip() else None


def qr_png(result: Result) -> bytes | None:
    resources = load_result_resources(store(), "DiagnosticReport", result.id)
    try:
        return render(resources, "png", "test", result.id, _keyring()).body
    except FhirError:
        return None


def wallet_link(hc1_text: str) -> str:
    """TousAntiCovid's import link: the HC1 string after `#`, percent-encoded as the app reads it."""
    return WALLET + quote(hc1_text, safe="$*+-./:")


def declaration_code(result: Result):
    """The TousAntiCovid declaration code of a positive result (one per result, the same at every
    visit, expiring with it: fhir_server/declaration_codes.py), or None: not positive, or the
    code provider cannot give one now (the page then says so rather than fail)."""
    from ..declaration_codes import CodeProviderError, code_for, retention_end

    if result.value != "detected":
        return None
    settings = current_app.config["SETTINGS"]
    try:
        return code_for(result.id, result.patient, result.owners, retention_end(settings, result.sampled))
    except CodeProviderError:
        return None


# -- audit ----------------------------------------------------------------------------------------
def audit(session: PortalSession, result: Result, what: str) -> None:
    """An AuditEvent for one access to one result (`what`: list, detail, pdf, qr), owned by the
    result's organisations (they search it by patient)."""
    audit_log = current_app.extensions.get("sidep.audit")
    if audit_log is None:
        return
    try:
        audit_log.record(access_event(session, result, what), result.owners)
    except Exception:  # noqa: BLE001 - as the API does: a failure to audit is logged, loudly
        log.exception("could not audit a portal access (%s)", what)


def access_event(session: PortalSession, result: Result, what: str) -> dict:
    from ..auth.audit import platform_event

    return platform_event(
        ("110110", "Patient Record"),
        (("110153", "Source Role ID"), f"citizen portal ({session.method})"),
        "SI-DEP citizen portal",
        current_app.config["SETTINGS"].base_url,
        [(f"Patient/{result.patient}", None), (f"DiagnosticReport/{result.id}", what)],
    )
