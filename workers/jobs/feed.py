"""The pseudonymised feed job: turns the change log into public health's records, in commit order.

A consumer of the change log (workers/consumers.py). A result is new or changed when its
DiagnosticReport, one of its Observations, its Patient or its Specimen is written: each such
write appends the result's record as it now is (fhir_server/pseudonyms.py record_of) to the feed
(storage/pseudonymised.py), once per batch of entries. A report that is not final (yet) is not a
result; one deleted, entered in error or cancelled after it was published is appended as
`withdrawn`. A write that changes nothing a record shows appends nothing. Records are computed from the current resources: two versions written in one batch
publish the last one (what a consumer would have replaced the first one with).
"""

from __future__ import annotations

import logging

from fhir_server.outcome import FhirError
from fhir_server.pseudonyms import Keyring, record_of, result_key
from fhir_server.storage import Store
from fhir_server.storage.pseudonymised import WITHDRAWN
from fhir_server.storage.read_ahead import ReadAhead
from fhir_server.submission import FINAL_STATUSES
from operations.generate_certificate import load_result_resources, read_ahead_reports
from workers.consumers import consume
from workers.context import context

log = logging.getLogger("workers.jobs.feed")

CONSUMER = "pseudonymised-feed"
# what else a report's record is made of, and the report's parameter that refers to it
MEMBERS = {"Observation": "result", "Patient": "subject", "Specimen": "specimen"}


def publish() -> int:
    """Publish what the change log holds after the feed's cursor; returns the entries read."""
    return consume(CONSUMER, publish_entries)


def publish_entries(entries: list[dict]) -> None:
    ctx = context()
    store, records = ctx.store, ctx.pseudonymised_records
    reports = reports_changed(store, entries)
    if not reports:
        return
    keyring = ctx.pseudonym_keyring
    published = records.published(reports)
    reads = ReadAhead(store)
    read_ahead_reports(reads, reports)
    items = []
    for rid in reports:
        record = current_record(reads, rid, ctx.settings, keyring)
        if not changes_what_was_published(record, published.get(rid)):
            continue
        key = published[rid]["_id"] if rid in published else result_key(rid, keyring)
        items.append({"result": key, "rid": rid, "rec": record})
    records.append(items)


def changes_what_was_published(record: dict | None, published: dict | None) -> bool:
    """A record differing from the result's last entry; a withdrawal of what was published and
    is not withdrawn yet. (A change of what no record shows, a phone number, appends nothing.)"""
    if published is None:
        return record is not None
    if record is None:
        return published["state"] != WITHDRAWN
    return published["state"] == WITHDRAWN or published["rec"] != record


def reports_changed(store: Store, entries: list[dict]) -> list[str]:
    """The reports whose record the entries' writes may change, in the order first written."""
    reports: dict[str, None] = {}
    members: dict[str, list[str]] = {rtype: [] for rtype in MEMBERS}
    for entry in entries:
        for rtype, rid, version, _deleted in entry["w"]:
            if rtype == "DiagnosticReport":
                reports.setdefault(rid)
            elif rtype in MEMBERS and version > 1:
                # a first version has no earlier report referring to it (a reference must
                # resolve when written): a report written with it is in this batch or a later one
                members[rtype].append(f"{rtype}/{rid}")
    for rtype, references in members.items():
        for rid in store.referrers("DiagnosticReport", (MEMBERS[rtype],), references):
            reports.setdefault(rid)
    return list(reports)


def current_record(store: Store | ReadAhead, rid: str, settings, keyring: Keyring) -> dict | None:
    """The record of the report as it now is, or None when it is not (or no longer) a result."""
    report = store.current("DiagnosticReport", rid)
    if report is None or report.deleted or report.resource.get("status") not in FINAL_STATUSES:
        return None
    try:
        resources = load_result_resources(store, "DiagnosticReport", rid)
    except FhirError:
        log.warning("a final report without the resources of a result was left out of the feed")
        return None
    return record_of(resources, settings, keyring)
