"""The outbox: events committed with the writes that caused them, taken by the dispatchers
(workers/dispatcher.py) and done by jobs.

An event goes `new` → `claimed` (one dispatcher took it) → `dispatched` (its job is in the
queue) → `done` or `failed` (the job's verdict). Claims are atomic, so several dispatchers never
take the same event; a claim left by a dispatcher that died is taken back after a while; events
stay in MongoDB until done, so nothing is lost while the queue is down. Operators see the counts
and the failed events, and put a failed one back to `new`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING

from .accounts import utc_now
from .mongo import OUTBOX

STATES = ("new", "claimed", "dispatched", "done", "failed")


def object_id(event_id) -> ObjectId | None:
    if isinstance(event_id, ObjectId):
        return event_id
    try:
        return ObjectId(event_id)
    except (InvalidId, TypeError):
        return None


class Outbox:
    def __init__(self, db):
        self.events = db[OUTBOX]

    # -- the dispatchers' side -------------------------------------------------------------
    def claim(self, dispatcher: str, limit: int, now: datetime | None = None) -> list[dict]:
        """Up to `limit` of the oldest new events, claimed for `dispatcher`, oldest first. Two
        dispatchers asking at once each get their own: the claim only takes events still new."""
        now = now or utc_now()
        oldest = list(self.events.find({"state": "new"}).sort([("state", 1), ("ts", 1), ("_id", 1)]).limit(limit))
        if not oldest:
            return []
        ids = [doc["_id"] for doc in oldest]
        claim = {"dispatcher": dispatcher, "token": uuid.uuid4().hex, "at": now}
        taken = self.events.update_many(
            {"_id": {"$in": ids}, "state": "new"}, {"$set": {"state": "claimed", "claim": claim}}
        )
        if taken.modified_count == len(ids):  # all of them: no other dispatcher took one meanwhile
            return [{**doc, "state": "claimed", "claim": claim} for doc in oldest]
        won = self.events.find({"_id": {"$in": ids}, "state": "claimed", "claim.token": claim["token"]})
        return sorted(won, key=lambda doc: (doc["ts"], doc["_id"]))

    def dispatched(self, events: list[dict], dispatcher: str) -> None:
        ids = [event["_id"] for event in events]
        self.events.update_many(
            {"_id": {"$in": ids}, "state": "claimed", "claim.dispatcher": dispatcher},
            {"$set": {"state": "dispatched", "dispatched": utc_now()}},
        )

    def release(self, events: list[dict], dispatcher: str) -> None:
        """Claimed events back to new (the queue could not take them)."""
        ids = [event["_id"] for event in events]
        self.events.update_many(
            {"_id": {"$in": ids}, "state": "claimed", "claim.dispatcher": dispatcher},
            {"$set": {"state": "new"}, "$unset": {"claim": ""}},
        )

    def take_back_stale_claims(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Claims a dispatcher took and never finished (it died) back to new."""
        cutoff = (now or utc_now()) - older_than
        result = self.events.update_many(
            {"state": "claimed", "claim.at": {"$lt": cutoff}}, {"$set": {"state": "new"}, "$unset": {"claim": ""}}
        )
        return result.modified_count

    def dispatched_before(self, older_than: timedelta, limit: int = 500, now: datetime | None = None) -> list[dict]:
        """Events dispatched long ago and still not done (their job may have vanished)."""
        cutoff = (now or utc_now()) - older_than
        query = {"state": "dispatched", "dispatched": {"$lt": cutoff}}
        return list(self.events.find(query).sort([("dispatched", ASCENDING)]).limit(limit))

    def redispatched(self, event_id) -> None:
        self.events.update_one({"_id": object_id(event_id)}, {"$set": {"dispatched": utc_now()}})

    def finish_without_job(self, events: list[dict], dispatcher: str) -> None:
        """Events of a kind no job consumes (yet): done as soon as taken."""
        ids = [event["_id"] for event in events]
        if not ids:
            return
        self.events.update_many(
            {"_id": {"$in": ids}, "state": "claimed", "claim.dispatcher": dispatcher},
            {"$set": {"state": "done", "done": utc_now()}},
        )

    # -- the jobs' side --------------------------------------------------------------------
    def get(self, event_id) -> dict | None:
        key = object_id(event_id)
        return self.events.find_one({"_id": key}) if key else None

    def pending_payload(self, event_id, payload: dict | None = None) -> dict | None:
        """What a job is to do for an event: `payload` when its dispatcher passed it, else the
        event's own, read; None when the event is gone or done."""
        if payload is not None:
            return payload
        event = self.get(event_id)
        if event is None or event.get("state") == "done":
            return None
        return event.get("payload") or {}

    def done(self, event_id, results: dict | None = None) -> None:
        fields = {"state": "done", "done": utc_now(), **({"results": results} if results else {})}
        self.events.update_one({"_id": object_id(event_id)}, {"$set": fields, "$unset": {"error": ""}})

    def fail(self, event_id, error: str, results: dict | None = None) -> None:
        """Failed for good (after the job's retries): operators see `error` (no personal value)."""
        fields = {"state": "failed", "failed": utc_now(), "error": error, **({"results": results} if results else {})}
        self.events.update_one({"_id": object_id(event_id)}, {"$set": fields})

    # -- the operators' side ---------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Events per state; every known state appears, with 0 when there is none."""
        counts = {state: 0 for state in STATES}
        for row in self.events.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
            counts[str(row["_id"])] = row["n"]
        return counts

    def failed(self, limit: int = 50) -> list[dict]:
        """The most recent failed events (notifications or routing that did not go through)."""
        return list(self.events.find({"state": "failed"}).sort([("ts", -1)]).limit(limit))

    def retry(self, event_id: str) -> bool:
        """A failed event back to "new"; False when there is no such failed event."""
        key = object_id(event_id)
        if key is None:
            return False
        result = self.events.update_one(
            {"_id": key, "state": "failed"},
            {"$set": {"state": "new", "retried": utc_now()}, "$inc": {"retries": 1}, "$unset": {"claim": ""}},
        )
        return bool(result.modified_count)

    # -- retention -------------------------------------------------------------------------
    def purge_about(self, keys: list[str]) -> int:
        """Remove the events about these resources (their merge key, e.g. "DiagnosticReport/<id>"),
        whatever their state: what they name is gone. Returns how many there were."""
        if not keys:
            return 0
        return self.events.delete_many({"key": {"$in": keys}}).deleted_count
