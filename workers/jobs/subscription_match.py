"""`match()`: the Subscriptions' consumer of the change log (workers/consumers.py). For each
batch and each active Subscription whose criteria's type was written, ONE query: the criteria as
the server's own search builds them (PlanBuilder, so a criteria match is a search match) AND the
batch's ids of that type AND what the subscriber may read by search (auth.policy.read_filter,
the request path's very rule; chained lookups narrowed the same way). Each match is a
notification record (storage/subscription_events.py) whose id is stable, so a batch handled
twice adds nothing, in the lane of its patient. A deleted resource is notified to the
subscriptions that were notified of it before. Then the lanes' delivery jobs are woken.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import parse_qsl

from fhir_server.auth.policy import read_filter
from fhir_server.auth.principal import Principal
from fhir_server.outcome import FhirError
from fhir_server.search.query import MAX_CHAIN_IDS, PlanBuilder
from fhir_server.settings import Settings
from fhir_server.storage import Store, union
from fhir_server.storage.conditions import all_of, ids_in
from workers.consumers import consume
from workers.context import WorkerContext, context
from workers.subscriptions import ACTIVE, ended, turn_off, wake_lanes

log = logging.getLogger("workers.jobs.subscription_match")

CONSUMER = "subscriptions"


def match() -> int:
    """Match what the change log holds after the subscriptions' cursor; returns the entries read."""
    return consume(CONSUMER, match_entries)


def match_entries(entries: list[dict]) -> None:
    ctx = context()
    events = ctx.subscription_events
    written = writes_by_type(entries)
    woken: set[tuple[str, int]] = set()
    for subscription in active_subscriptions(ctx.store, set(written)):
        sid, resource = subscription["_id"], subscription["res"]
        if ended(resource):
            turn_off(ctx, sid)
            continue
        known, who = events.subscriber(sid)
        if not known:
            continue  # active only after its handshake recorded the subscriber: a race, not a case
        rtype = resource["criteria"].partition("?")[0]
        principal = Principal.from_doc(who) if who else None
        try:
            notifications = notifications_of(ctx, sid, resource["criteria"], principal, written[rtype], events)
        except FhirError:
            log.warning("subscription %s: its criteria no longer hold for its subscriber; nothing matched", sid)
            continue
        events.add(notifications)
        woken.update((sid, n["lane"]) for n in notifications)
    if woken:
        wake_lanes(ctx, sorted(woken))


def writes_by_type(entries: list[dict]) -> dict[str, dict[str, dict]]:
    """type -> id -> its last write in the entries: position (seq, index in the entry), version,
    deletion, commit time."""
    written: dict[str, dict[str, dict]] = {}
    for entry in entries:
        for index, (rtype, rid, version, deleted) in enumerate(entry["w"]):
            written.setdefault(rtype, {})[rid] = {
                "pos": entry["seq"],
                "ord": index,
                "v": version,
                "del": deleted,
                "at": entry["ts"],
            }
    return written


def active_subscriptions(store: Store, types: set[str]) -> list[dict]:
    docs = store.collection("Subscription").find({"del": False, "res.status": ACTIVE}, {"res": 1})
    return [d for d in docs if str(d["res"].get("criteria", "")).partition("?")[0] in types]


def notifications_of(
    ctx: WorkerContext, sid: str, criteria: str, principal: Principal | None, writes: dict[str, dict], events
) -> list[dict]:
    rtype = criteria.partition("?")[0]
    lanes = ctx.settings.subscription_lanes
    live = [rid for rid, write in writes.items() if not write["del"]]
    found = []
    for doc in criteria_matches(ctx.store, ctx.settings, criteria, principal, live):
        write, patient = writes[doc["_id"]], patient_of(rtype, doc)
        lane = lane_of(patient or f"{rtype}/{doc['_id']}", lanes)
        found.append(_notification(sid, rtype, doc["_id"], doc["v"], False, write, patient, lane))
    gone = [f"{rtype}/{rid}" for rid, write in writes.items() if write["del"]]
    for reference, lane in (events.notified(sid, gone) if gone else {}).items():
        rid = reference.partition("/")[2]
        found.append(_notification(sid, rtype, rid, writes[rid]["v"], True, writes[rid], None, lane))
    return found


def criteria_matches(
    store: Store, settings: Settings, criteria: str, principal: Principal | None, ids: list[str]
) -> list[dict]:
    """The current resources among `ids` that the criteria match and `principal` may read by
    search (None: every one), with their version and patient references: exactly what a search
    `criteria&_id=<ids>` by that principal finds."""
    if not ids:
        return []
    rtype, _, query = criteria.partition("?")

    def narrowed(target: str, plan, projection: str) -> list[dict]:
        fields = {projection: 1} if projection != "_id" else {"_id": 1}
        condition = all_of(plan.filter, read_filter(principal, target) if principal else None)
        return union.find(store.collection(target), condition, fields, None, MAX_CHAIN_IDS + 1)

    builder = PlanBuilder(
        settings.base_url,
        settings.default_page_size,
        settings.max_page_size,
        narrowed,
        strict=True,
        max_value_length=settings.max_search_value_length,
    )
    plan = builder.build(rtype, parse_qsl(query, keep_blank_values=True))
    # led by the batch's ids: the few documents to look at, whatever the criteria
    condition = all_of(ids_in(ids), plan.filter, read_filter(principal, rtype) if principal else None)
    return union.find(store.collection(rtype), condition, {"v": 1, "s.patient": 1, "s.subject": 1}, None, 0)


def patient_of(rtype: str, doc: dict) -> str | None:
    if rtype == "Patient":
        return f"Patient/{doc['_id']}"
    index = doc.get("s") or {}
    for parameter in ("patient", "subject"):
        values = index.get(parameter) or []
        for value in [values] if isinstance(values, str) else values:
            if value.startswith("Patient/"):
                return value
    return None


def lane_of(key: str, lanes: int) -> int:
    """The lane of a patient reference (its notifications go one after another), or of the
    resource itself when it is about no patient."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(lanes, 1)


def event_id(sid: str, rtype: str, rid: str, version: int) -> str:
    return hashlib.sha256(f"{sid}|{rtype}/{rid}/_history/{version}".encode()).hexdigest()[:32]


def _notification(
    sid: str, rtype: str, rid: str, version: int, deleted: bool, write: dict, patient: str | None, lane: int
) -> dict:
    return {
        "_id": event_id(sid, rtype, rid, version),
        "sub": sid,
        "lane": lane,
        "pos": write["pos"],
        "ord": write["ord"],
        "res": f"{rtype}/{rid}",
        "v": version,
        "del": deleted,
        "pat": patient,
        "at": write["at"],
    }
