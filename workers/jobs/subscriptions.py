"""Subscriptions (FHIR R4 rest-hook): matching every committed write, and delivering in order.

- `handshake(event_id)`: the `subscription-requested` outbox event of a client's write
  (fhir_server/subscriptions.py). Records the subscriber (the writer's principal: what it may
  read by search is what it is notified of) and POSTs an empty body with
  `X-Subscription-Event: handshake` to the endpoint: 2xx makes the Subscription `active` (and
  what waited for it pending again); otherwise RQ retries it (SUBSCRIPTION_RETRY_INTERVALS), and
  after SUBSCRIPTION_MAX_FAILURES tries it is `error` with the `error` text.
- `match()`: a consumer of the change log (workers/consumers.py). For each batch and each
  active Subscription whose criteria's type was written, ONE query: the criteria as the
  server's own search builds them (PlanBuilder, so a criteria match is a search match) AND the
  batch's ids of that type AND what the subscriber may read by search (auth.policy.read_filter,
  the request path's very rule; chained lookups narrowed the same way). Each match is a
  notification record (storage/subscription_events.py) whose id is stable, so a batch handled
  twice adds nothing. A deleted resource is notified to the subscriptions that were notified of
  it before.
- `deliver(subscription_id, lane)`: one job per (Subscription, lane) at a time (a lease), sending
  the lane's notifications in change-log order and stopping at the first failure, which is
  retried after its backoff (the dispatcher's maintenance wakes lanes whose head is due and whose
  lease is free: a killed worker's lane too). Order per patient thus holds across failures, and
  delivery is at least once: a worker killed after the send and before the record sends it again,
  with the same `X-Event-Id`. After SUBSCRIPTION_MAX_FAILURES failed tries of one notification
  the Subscription is `error` (with the reason) and its notifications wait (`held`) until its
  owner changes its channel (a new handshake). `end` in the past turns it `off`.

What is sent is described in the README ("Subscriptions"); logs name Subscription ids and
counts only, never an endpoint, a header value, a secret or a resource.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
import requests
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from fhir_server.auth.audit import platform_event
from fhir_server.auth.policy import read_filter
from fhir_server.auth.principal import Principal
from fhir_server.outcome import FhirError
from fhir_server.search.query import MAX_CHAIN_IDS, PlanBuilder
from fhir_server.settings import Settings
from fhir_server.storage import Store
from fhir_server.storage.accounts import Accounts
from fhir_server.storage.conditions import all_of, ids_in
from fhir_server.storage.leases import Leases
from fhir_server.storage.mongo import HISTORY
from fhir_server.storage.outbox import Outbox
from fhir_server.storage.subscription_events import SubscriptionEvents
from fhir_server.subscriptions import REQUESTED, as_shown, secret_of
from workers.channels import Transient
from workers.consumers import consume
from workers.context import WorkerContext, context
from workers.queue import changes_queue_name, queue

log = logging.getLogger("workers.jobs.subscriptions")

CONSUMER = "subscriptions"
ACTIVE, ERROR, OFF = "active", "error", "off"
DELIVER_JOB = "workers.jobs.subscriptions.deliver"
DELIVERY_JOB_SECONDS = 20.0  # a lane's job hands over after this (the dispatcher wakes it again)
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
FHIR_JSON = "application/fhir+json"


# -- matching ----------------------------------------------------------------------------------
def match() -> int:
    """Match what the change log holds after the subscriptions' cursor; returns the entries read."""
    return consume(CONSUMER, match_entries)


def match_entries(entries: list[dict]) -> None:
    ctx = context()
    events = _events(ctx)
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
        return list(store.collection(target).find(condition, fields).limit(MAX_CHAIN_IDS + 1))

    builder = PlanBuilder(
        settings.base_url,
        settings.default_page_size,
        settings.max_page_size,
        narrowed,
        strict=True,
        max_value_length=settings.max_search_value_length,
    )
    plan = builder.build(rtype, parse_qsl(query, keep_blank_values=True))
    condition = all_of(plan.filter, ids_in(ids), read_filter(principal, rtype) if principal else None)
    return list(store.collection(rtype).find(condition, {"v": 1, "s.patient": 1, "s.subject": 1}))


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


# -- waking lanes ------------------------------------------------------------------------------
def lane_job_id(sid: str, lane: int) -> str:
    return f"subscription-{sid}-{lane}"


def lane_lease(sid: str, lane: int) -> str:
    return f"subscription:{sid}:{lane}"


def wake_lanes(ctx: WorkerContext, lanes: list[tuple[str, int]]) -> int:
    settings = ctx.settings
    return enqueue_lanes(queue(settings.redis_url, changes_queue_name(settings.queue_name)), lanes)


def enqueue_lanes(rq_queue, lanes: list[tuple[str, int]]) -> int:
    """Enqueue the delivery job of each lane unless it is already waiting in the queue (a running
    one looks again before it ends). Returns how many were enqueued."""
    enqueued = 0
    for sid, lane in lanes:
        job = lane_job_id(sid, lane)
        try:
            if Job.fetch(job, connection=rq_queue.connection).get_status(refresh=False) in WAITING:
                continue
        except NoSuchJobError:
            pass
        rq_queue.enqueue(
            DELIVER_JOB,
            sid,
            lane,
            job_id=job,
            job_timeout=int(DELIVERY_JOB_SECONDS * 3),
            result_ttl=60,
            failure_ttl=3600,
        )
        enqueued += 1
    return enqueued


def ready_lanes(db, now: datetime | None = None) -> list[tuple[str, int]]:
    """Lanes with a due notification and no live lease (none delivering them: a worker died, a
    backoff is over): what the dispatcher's maintenance wakes."""
    leases = Leases(db)
    return [
        (sid, lane)
        for sid, lane in SubscriptionEvents(db).ready_lanes(now)
        if leases.holder(lane_lease(sid, lane)) is None
    ]


# -- delivering --------------------------------------------------------------------------------
def deliver(sid: str, lane: int, budget: float = DELIVERY_JOB_SECONDS) -> int:
    """Send the lane's due notifications in order, under its lease; returns how many were sent."""
    ctx = context()
    leases, events = Leases(ctx.store.db), _events(ctx)
    holder, name = f"{socket.gethostname()}:{os.getpid()}", lane_lease(sid, lane)
    started, sent = time.monotonic(), 0
    while time.monotonic() - started < budget:
        if not leases.take(name, holder, ctx.settings.lease_seconds):
            break
        try:
            sent += _deliver_lane(ctx, events, sid, lane, lambda: leases.take(name, holder, ctx.settings.lease_seconds))
        finally:
            leases.release(name, holder)
        head = events.head(sid, lane)  # written while the lease was being let go?
        if head is None or head["due"] > _now() or not _active(ctx, sid):
            break
    return sent


def _deliver_lane(ctx: WorkerContext, events: SubscriptionEvents, sid: str, lane: int, renew) -> int:
    subscription = ctx.store.current("Subscription", sid)
    if subscription is None or subscription.deleted:
        events.drop(sid)
        return 0
    resource = subscription.resource or {}
    if ended(resource):
        turn_off(ctx, sid)
        return 0
    if resource.get("status") != ACTIVE:
        events.hold(sid)
        return 0
    _, who = events.subscriber(sid)
    principal = Principal.from_doc(who) if who else None
    if principal is not None and not subscriber_active(ctx, principal):
        fail(ctx, sid, "Le client abonné n'est plus actif (révoqué ou supprimé)")
        return 0
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < DELIVERY_JOB_SECONDS:
        head = events.head(sid, lane)
        if head is None or head["due"] > _now():
            break
        request = notification_request(ctx, resource, head, principal)
        if request is None:
            events.drop_one(head["_id"])
            continue
        failure = send(ctx.settings, request)
        audit(ctx, sid, head, request, failure is None)
        if failure is not None:
            tries = events.failed(head["_id"], failure, backoff(ctx.settings, head.get("attempts", 0) + 1))
            if tries >= ctx.settings.subscription_max_failures:
                fail(ctx, sid, f"La notification a échoué {tries} fois (dernière erreur : {failure})")
            break
        events.sent(head["_id"])
        sent += 1
        if not renew():
            break
    return sent


def backoff(settings: Settings, tries: int) -> timedelta:
    intervals = settings.subscription_retry_intervals or (60,)
    return timedelta(seconds=intervals[min(tries, len(intervals)) - 1])


def subscriber_active(ctx: WorkerContext, principal: Principal) -> bool:
    if principal.kind != "client":
        return True
    client = Accounts(ctx.store.db).client(principal.id)
    return bool(client and client.get("active", True))


def _active(ctx: WorkerContext, sid: str) -> bool:
    record = ctx.store.current("Subscription", sid)
    return bool(record and not record.deleted and (record.resource or {}).get("status") == ACTIVE)


# -- what goes out -----------------------------------------------------------------------------
class Outgoing:
    """One HTTP request to a subscriber's endpoint."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes, owners: list[str] | None):
        self.method, self.url, self.headers, self.body, self.owners = method, url, headers, body, owners


def notification_request(
    ctx: WorkerContext, subscription: dict, event: dict, principal: Principal | None
) -> Outgoing | None:
    """The request of one notification, or None when the subscriber may no longer read it (or
    its version is gone: purged)."""
    rtype, _, rid = event["res"].partition("/")
    current = ctx.store.collection(rtype).find_one(
        all_of({"_id": rid}, read_filter(principal, rtype) if principal else None), {"org": 1}
    )
    if current is None:
        return None
    channel = subscription.get("channel") or {}
    with_payload = bool(channel.get("payload"))
    body, method, url = b"", "POST", channel["endpoint"]
    if with_payload:
        url = _resource_url(channel["endpoint"], rtype, rid)
        method = "DELETE" if event["del"] else "PUT"
        if not event["del"]:
            version = ctx.store.collection(HISTORY).find_one({"_id": f"{rtype}/{rid}/{event['v']}"}, {"res": 1})
            if version is None or not version.get("res"):
                return None
            body = orjson.dumps(as_shown(version["res"]))
    headers = {
        **channel_headers(channel),
        "X-Subscription-Id": subscription["id"],
        "X-Subscription-Event": "notification",
        "X-Event-Id": event["_id"],
        "X-Resource": f"{rtype}/{rid}/_history/{event['v']}",
    }
    if body:
        headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    sign(headers, secret_of(subscription), event["_id"], body)
    return Outgoing(method, url, headers, body, current.get("org"))


def handshake_request(subscription: dict) -> Outgoing:
    channel = subscription.get("channel") or {}
    event = f"handshake-{subscription['id']}-{subscription.get('meta', {}).get('versionId', '')}"
    headers = {
        **channel_headers(channel),
        "X-Subscription-Id": subscription["id"],
        "X-Subscription-Event": "handshake",
        "X-Event-Id": event,
    }
    sign(headers, secret_of(subscription), event, b"")
    return Outgoing("POST", channel["endpoint"], headers, b"", None)


def channel_headers(channel: dict) -> dict[str, str]:
    headers = {}
    for line in channel.get("header") or []:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers


def sign(headers: dict[str, str], secret: str | None, event: str, body: bytes) -> None:
    """`X-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Event-Id>.<X-Timestamp>." + body)>`."""
    stamp = str(int(time.time()))
    headers["X-Timestamp"] = stamp
    if secret:
        digest = hmac.new(secret.encode(), f"{event}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        headers["X-Signature"] = f"sha256={digest}"


def _resource_url(endpoint: str, rtype: str, rid: str) -> str:
    """{endpoint}/{Type}/{id}, the endpoint's query string kept after the path."""
    url = urlsplit(endpoint)
    return urlunsplit((url.scheme, url.netloc, f"{url.path.rstrip('/')}/{rtype}/{rid}", url.query, ""))


_sessions: dict[int, requests.Session] = {}


def send(settings: Settings, outgoing: Outgoing) -> str | None:
    """None when the endpoint answered 2xx, else the reason (no URL, no header value)."""
    session = _sessions.get(os.getpid())
    if session is None:
        session = _sessions[os.getpid()] = requests.Session()
    try:
        response = session.request(
            outgoing.method,
            outgoing.url,
            headers=outgoing.headers,
            data=outgoing.body,
            timeout=settings.subscription_timeout_seconds,
            allow_redirects=False,
        )
    except requests.Timeout:
        return "délai de réponse dépassé"
    except requests.RequestException as exc:
        return f"connexion impossible ({type(exc).__name__})"
    response.close()
    return None if 200 <= response.status_code < 300 else f"réponse HTTP {response.status_code}"


def audit(ctx: WorkerContext, sid: str, event: dict, outgoing: Outgoing, sent: bool) -> None:
    """The AuditEvent of one delivery: the platform sent (or tried to) a resource out (DICOM Export)."""
    record = platform_event(
        ("110106", "Export"),
        (("110150", "Application"), "SI-DEP subscription delivery (rest-hook)"),
        "SI-DEP workers",
        ctx.settings.base_url,
        [(event.get("pat"), None), (event["res"], None), (f"Subscription/{sid}", None)],
        outcome="0" if sent else "4",
    )
    ctx.audit.record(record, outgoing.owners)


# -- the Subscription's status -----------------------------------------------------------------
def set_status(store: Store, sid: str, status: str, error: str | None = None, expect=None) -> bool:
    """A server write of the Subscription's status (a new version); False when it is gone or its
    status is not one of `expect`."""

    def write(uow) -> bool:
        record = uow.current("Subscription", sid)
        if record is None or record.deleted or not record.resource:
            return False
        if expect is not None and record.resource.get("status") not in expect:
            return False
        resource = {key: value for key, value in record.resource.items() if key != "error"}
        resource["status"] = status
        if error:
            resource["error"] = error
        uow.put("Subscription", sid, resource)
        return True

    return store.run(write)


def fail(ctx: WorkerContext, sid: str, reason: str) -> None:
    set_status(ctx.store, sid, ERROR, reason, expect={ACTIVE, REQUESTED})
    _events(ctx).hold(sid)
    log.warning("subscription %s set to error after repeated failures", sid)


def turn_off(ctx: WorkerContext, sid: str) -> None:
    set_status(ctx.store, sid, OFF, expect={ACTIVE, REQUESTED, ERROR})
    _events(ctx).drop(sid)


def ended(resource: dict) -> bool:
    end = resource.get("end")
    if not isinstance(end, str):
        return False
    try:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment <= datetime.now(UTC)


# -- the handshake -----------------------------------------------------------------------------
def handshake(event_id: str) -> dict:
    ctx = context()
    outbox, events = Outbox(ctx.store.db), _events(ctx)
    event = outbox.get(event_id)
    if event is None or event.get("state") == "done":
        return {"skipped": "no such event or done"}
    payload = event.get("payload") or {}
    sid = payload.get("subscription", "")
    events.keep_subscriber(sid, payload.get("principal"))
    record = ctx.store.current("Subscription", sid)
    if record is None or record.deleted or (record.resource or {}).get("status") != REQUESTED:
        outbox.done(event_id, {"skipped": "not requested"})
        return {"skipped": "not requested"}
    if ended(record.resource or {}):
        turn_off(ctx, sid)
        outbox.done(event_id, {"status": OFF})
        return {"status": OFF}
    failure = send(ctx.settings, handshake_request(record.resource or {}))
    if failure is None:
        set_status(ctx.store, sid, ACTIVE, expect={REQUESTED})
        lanes = events.release(sid)
        if lanes:
            wake_lanes(ctx, [(sid, lane) for lane in lanes])
        outbox.done(event_id, {"status": ACTIVE})
        return {"status": ACTIVE}
    if _last_try():
        reason = f"La poignée de main (handshake) a échoué : {failure}"
        set_status(ctx.store, sid, ERROR, reason, expect={REQUESTED})
        outbox.fail(event_id, reason)
        return {"status": ERROR}
    raise Transient(failure)


def _last_try() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


# -- helpers -----------------------------------------------------------------------------------
_indexed: set[tuple] = set()


def _events(ctx: WorkerContext) -> SubscriptionEvents:
    events = SubscriptionEvents(ctx.store.db)
    key = (ctx.settings.mongodb_uri, ctx.settings.mongodb_db, os.getpid())
    if key not in _indexed:
        events.ensure_indexes()
        _indexed.add(key)
    return events


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
