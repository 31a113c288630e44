"""`purge(now=None)`: what the retention rules no longer allow, removed. Enqueued by the
dispatcher every RETENTION_SWEEP_SECONDS; `now` (ISO 8601) lets a test or an operator run it as of
another moment. The job alone applies every rule: no TTL index is relied on (SecantusDB need not
run TTL monitors, and most rules span collections or read history).

- results: RESULT_RETENTION_MONTHS after their integration, the moment SI-DEP received them (the
  first version of their DiagnosticReport; a correction sent later does not restart the clock).
  With the report go the other resources of its dossier (its Observations, Specimens,
  ServiceRequest, and its Patient) unless a kept resource of a result still refers to them (the
  Patient of a newer dossier stays), each with its history, its conditional claims, the outbox
  events about the report, and the person-record links of the Patients that go (a person record
  left with no link goes too); their pseudonymised records stay but no longer say which report
  they were. Organizations, Practitioners and code lists are not patient data;
- Subscription notifications: the results' retention after the write they notify; the
  subscriber record of a Subscription once it is deleted;
- public health's pseudonymised records (feed and current records): PSEUDONYMISED_RETENTION_MONTHS
  after each was written;
- AuditEvents, the trace of accesses: AUDIT_RETENTION_MONTHS after they were written (longer than
  the results: who read a result must be answerable after the result is gone);
- MSSanté message copies (and their PDFs): 72 hours after sampling for a negative result, 6 months
  for a positive one (their date is set when the message is built);
- delivery records, with the Communications recording them, and deep links: the result's
  retention (RESULT_RETENTION_MONTHS after sampling);
- TousAntiCovid declaration codes: the result's retention too;
- results of asynchronous requests: ASYNC_RESULT_MINUTES after they were asked; bulk exports,
  with their NDJSON files, EXPORT_HOURS after they finished (and any export directory whose task
  is gone: one deleted while its job was writing);
- the portal's one-time code records (with their deep link) and its ended sessions.

Results go RETENTION_BATCH reports at a time, so memory holds one batch whatever the backlog;
a purge interrupted half-way is finished by the next one (what is left still qualifies).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from dateutil.relativedelta import relativedelta

from fhir_server import exports
from fhir_server.search.dates import parse_range, utc_now
from fhir_server.search.extract import reference_key
from fhir_server.storage import Store, otps, portal_sessions
from fhir_server.storage.audit import purge_written_before
from fhir_server.storage.declaration_codes import DeclarationCode, DeclarationCodes
from fhir_server.storage.deliveries import MODELS, DeepLinks, Deliveries
from fhir_server.storage.outbox import Outbox
from fhir_server.storage.persons import Persons
from fhir_server.storage.pseudonymised import PseudonymisedRecords
from fhir_server.storage.subscription_events import SubscriptionEvents
from fhir_server.storage.tasks import AsyncTask
from workers.context import context

# the dossier's resources besides its report, in the order they are judged: each is judged after
# those that may refer to it (an Observation names its Specimen and ServiceRequest; a
# ServiceRequest its Specimen; all of them the Patient)
MEMBERS = ("Observation", "ServiceRequest", "Specimen", "Patient")
# where a resource of a result refers to another (reference search parameters)
REFERRERS = {
    "DiagnosticReport": ("based-on", "result", "specimen", "subject"),
    "Observation": ("based-on", "specimen", "subject"),
    "ServiceRequest": ("specimen", "subject"),
    "Specimen": ("subject",),
}
# the elements of a report, then of an Observation, that name the dossier's resources
REPORT_ELEMENTS = ("subject", "basedOn", "specimen", "result")
OBSERVATION_ELEMENTS = ("subject", "basedOn", "specimen")


def purge(now: str | None = None) -> dict[str, int]:
    ctx = context()
    ctx.connect_records(*MODELS, DeclarationCode, AsyncTask, *otps.MODELS, *portal_sessions.MODELS)
    moment = parse_range(now)[0] if now else utc_now()
    settings, store = ctx.settings, ctx.store
    removed = purge_results(
        store, moment - relativedelta(months=settings.result_retention_months), settings.retention_batch
    )
    records = PseudonymisedRecords(store.db)
    removed["pseudonymised records"] = records.purge_before(
        moment - relativedelta(months=settings.pseudonymised_retention_months)
    )
    removed.update(purge_subscription_records(store, moment - relativedelta(months=settings.result_retention_months)))
    removed["AuditEvent"] = purge_written_before(store, moment - relativedelta(months=settings.audit_retention_months))
    deliveries = Deliveries()
    removed["Communication"] = store.purge("Communication", deliveries.expired_communications(moment))
    removed.update({**deliveries.purge(moment), **DeepLinks().purge(moment)})
    removed["declaration codes"] = DeclarationCodes().purge_expired(moment)
    removed.update(purge_exports(settings, moment))
    removed["asynchronous results"] = AsyncTask.purge(moment)
    removed.update(otps.Otps().purge(moment))
    removed.update(portal_sessions.PortalSessions().purge(moment))
    return removed


def purge_exports(settings, moment: datetime) -> dict[str, int]:
    """The files of the exports expired at `moment` (their tasks go with the asynchronous
    results), and the export directories no task owns any longer."""
    expired = AsyncTask.expired_exports(moment)
    for task_id in expired:
        exports.remove(settings, task_id)
    live = set(AsyncTask.export_ids()) - set(expired)
    return {"exports": len(expired), "orphan export directories": exports.remove_orphans(settings, live)}


def purge_subscription_records(store: Store, written_before: datetime) -> dict[str, int]:
    """Notifications past the results' retention, and the subscribers of deleted Subscriptions."""
    events = SubscriptionEvents(store.db)
    known = events.subscriber_ids()
    current = {record.id for record in store.fetch_many("Subscription", known)} if known else set()
    return events.purge(written_before, [sid for sid in known if sid not in current])


def purge_results(store: Store, integrated_before: datetime, batch: int) -> dict[str, int]:
    """Every result integrated before `integrated_before`, with its dossier (see the docstring)."""
    removed: Counter = Counter({"results": 0, "DiagnosticReport": 0, **dict.fromkeys(MEMBERS, 0)})
    while reports := store.created_before("DiagnosticReport", integrated_before, batch):
        removed.update(purge_dossiers(store, reports))
    return dict(removed)


def purge_dossiers(store: Store, reports: list[str]) -> Counter:
    """The reports go last: until they are gone the next purge finds them again, so a purge
    interrupted half-way leaves nothing (a person link, an event) it would not finish."""
    going = going_with(store, reports)
    removed = Counter({"results": len(reports)})
    links, persons = Persons(store.db).forget([f"Patient/{rid}" for rid in sorted(going["Patient"])])
    removed["person links"], removed["person records"] = links, persons
    removed["outbox events"] = Outbox(store.db).purge_about([f"DiagnosticReport/{rid}" for rid in reports])
    PseudonymisedRecords(store.db).forget_results(reports)
    for rtype in (*MEMBERS, "DiagnosticReport"):
        removed[rtype] = store.purge(rtype, sorted(going[rtype]))
    return removed


def going_with(store: Store, reports: list[str]) -> dict[str, set[str]]:
    """type -> the ids that go with these reports: their dossiers' resources that no resource of a
    kept result refers to."""
    named = dossier_of(store, reports)
    going: dict[str, set[str]] = {"DiagnosticReport": set(reports)}
    for rtype in MEMBERS:
        going[rtype] = named[rtype] - still_referred(store, rtype, named[rtype], going)
    return going


def dossier_of(store: Store, reports: list[str]) -> dict[str, set[str]]:
    """type -> ids every stored version of the reports (and of their Observations) names: a
    reference changed since still named a resource of the dossier."""
    named: dict[str, set[str]] = defaultdict(set)
    for report in store.versions_of("DiagnosticReport", reports):
        add_references(store, named, report, REPORT_ELEMENTS)
    for observation in store.versions_of("Observation", sorted(named["Observation"])):
        add_references(store, named, observation, OBSERVATION_ELEMENTS)
    return named


def add_references(store: Store, named: dict[str, set[str]], resource: dict, elements: tuple[str, ...]) -> None:
    for element in elements:
        values = resource.get(element)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, dict) and isinstance(value.get("reference"), str):
                rtype, _, rid = reference_key(value["reference"], store.base_url).partition("/")
                if rtype in MEMBERS and rid:
                    named[rtype].add(rid)


def still_referred(store: Store, rtype: str, ids: set[str], going: dict[str, set[str]]) -> set[str]:
    """Those of `ids` a current resource of a result that is not going refers to."""
    references = [f"{rtype}/{rid}" for rid in sorted(ids)]
    kept: set[str] = set()
    for referrer, parameters in REFERRERS.items():
        for rid, held in store.referrers(referrer, parameters, references).items():
            if rid not in going.get(referrer, ()):
                kept.update(reference.partition("/")[2] for reference in held)
    return kept
