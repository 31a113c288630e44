"""`deliver(subscription_id, lane)`: one job per (Subscription, lane) at a time (a lease),
sending the lane's notifications in change-log order and stopping at the first failure, which is
retried after its backoff (the dispatcher's maintenance wakes lanes whose head is due and whose
lease is free: a killed worker's lane too). Order per patient thus holds across failures, and
delivery is at least once: a worker killed after the send and before the record sends it again,
with the same `X-Event-Id`. After SUBSCRIPTION_MAX_FAILURES failed tries of one notification the
Subscription is `error` (with the reason) and its notifications wait (`held`) until its owner
changes its channel (a new handshake). `end` in the past turns it `off`.

What is sent is described in the README ("Subscriptions"); logs name Subscription ids and counts
only, never an endpoint, a header value, a secret or a resource.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import orjson

from fhir_server.auth.audit import platform_event
from fhir_server.auth.policy import read_filter
from fhir_server.auth.principal import Principal
from fhir_server.settings import Settings
from fhir_server.storage.accounts import Accounts
from fhir_server.storage.conditions import all_of
from fhir_server.storage.leases import Leases
from fhir_server.storage.mongo import HISTORY
from fhir_server.storage.subscription_events import SubscriptionEvents
from fhir_server.subscriptions import as_shown, secret_of
from workers.channels.rest_hook import FHIR_JSON, Outgoing, channel_headers, resource_url, send, sign
from workers.context import WorkerContext, context
from workers.subscriptions import ACTIVE, DELIVERY_JOB_SECONDS, ended, fail, lane_lease, now, turn_off


def deliver(sid: str, lane: int, budget: float = DELIVERY_JOB_SECONDS) -> int:
    """Send the lane's due notifications in order, under its lease; returns how many were sent."""
    ctx = context()
    leases, events = Leases(ctx.store.db), ctx.subscription_events
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
        if head is None or head["due"] > now() or not _active(ctx, sid):
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
        if head is None or head["due"] > now():
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
        url = resource_url(channel["endpoint"], rtype, rid)
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
