"""`handshake(event_id)`: the `subscription-requested` outbox event of a client's write
(fhir_server/subscriptions.py). Records the subscriber (the writer's principal: what it may read
by search is what it is notified of) and POSTs an empty body with
`X-Subscription-Event: handshake` to the endpoint: 2xx makes the Subscription `active` (and what
waited for it pending again); otherwise RQ retries it (SUBSCRIPTION_RETRY_INTERVALS), and after
SUBSCRIPTION_MAX_FAILURES tries it is `error` with the `error` text. Logs name Subscription ids
only, never an endpoint, a header value or a secret.
"""

from __future__ import annotations

from rq import get_current_job

from fhir_server.storage.outbox import Outbox
from fhir_server.subscriptions import REQUESTED, secret_of
from workers.channels import Transient
from workers.channels.rest_hook import Outgoing, channel_headers, send, sign
from workers.context import context
from workers.subscriptions import ACTIVE, ERROR, OFF, ended, set_status, turn_off, wake_lanes


def handshake(event_id: str, payload: dict | None = None) -> dict:
    """`payload`: the event's, which the dispatcher passes; a job enqueued without it reads the
    event."""
    ctx = context()
    outbox, events = Outbox(ctx.store.db), ctx.subscription_events
    payload = outbox.pending_payload(event_id, payload)
    if payload is None:
        return {"skipped": "no such event or done"}
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


def _last_try() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left
