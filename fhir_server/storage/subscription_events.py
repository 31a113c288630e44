"""What the Subscriptions' delivery keeps: who each subscriber is, and the notifications to send.

- `_subscribers`: `{_id: Subscription id, principal: Principal.to_doc() of the client that created
  it (None when the server runs without auth), at}`. A Subscription is notified of what that
  principal could read by search; the request that wrote it is long gone when a write matches.
- `_subscription_events`: one notification per (Subscription, resource version) matched:
  `{_id: event id, sub, lane, pos, ord, res: "Type/id", v, del, state, attempts, due, at, sent,
  reason}`. The event id is a digest of the Subscription id and `Type/id/_history/v`, so a batch
  of the change log matched twice (a killed job) adds nothing, and a receiver drops a duplicate
  delivery by it. `lane` spreads a Subscription's notifications over independent queues (a
  digest of the patient they are about): each lane is delivered in (`pos`, `ord`) order, its
  position in the change log, one at a time. `state`: `pending` (to send, not before `due`),
  `held` (the Subscription is not active: sent once it is again), `sent`, `dropped` (the
  Subscription was deleted or ended). `at` is the commit time of the write notified.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, InsertOne
from pymongo.errors import BulkWriteError

from .accounts import utc_now

SUBSCRIBERS = "_subscribers"
EVENTS = "_subscription_events"
PENDING, HELD, SENT, DROPPED = "pending", "held", "sent", "dropped"
ORDER = [("pos", ASCENDING), ("ord", ASCENDING)]
DUPLICATE_KEY = 11000


class SubscriptionEvents:
    def __init__(self, db):
        self.subscribers = db[SUBSCRIBERS]
        self.events = db[EVENTS]

    def ensure_indexes(self) -> None:
        self.events.create_index([("sub", ASCENDING), ("lane", ASCENDING), ("state", ASCENDING), *ORDER])
        self.events.create_index([("sub", ASCENDING), ("res", ASCENDING)])
        self.events.create_index([("state", ASCENDING)])
        self.events.create_index([("at", ASCENDING)])

    # -- subscribers ------------------------------------------------------------------------
    def keep_subscriber(self, subscription: str, principal: dict | None) -> dict | None:
        """Record `principal` as the subscriber of `subscription` unless another principal already
        is (an operator updating a laboratory's Subscription does not become its subscriber; the
        owner's own update refreshes its scopes). Returns the subscriber's principal."""
        known = self.subscribers.find_one({"_id": subscription})
        if known is not None and not _same_principal(known.get("principal"), principal):
            return known.get("principal")
        self.subscribers.replace_one(
            {"_id": subscription}, {"_id": subscription, "principal": principal, "at": utc_now()}, upsert=True
        )
        return principal

    def subscriber(self, subscription: str) -> tuple[bool, dict | None]:
        """(known, principal): a Subscription not handshaken yet has no subscriber record."""
        doc = self.subscribers.find_one({"_id": subscription})
        return (doc is not None, doc.get("principal") if doc else None)

    # -- the matcher's side -------------------------------------------------------------------
    def add(self, notifications: list[dict]) -> int:
        """Insert notifications (documents as the module docstring says, without state), ignoring
        those already there. Returns how many were new."""
        if not notifications:
            return 0
        now = utc_now()
        docs = [{**n, "state": PENDING, "attempts": 0, "due": now} for n in notifications]
        try:
            return self.events.bulk_write([InsertOne(d) for d in docs], ordered=False).inserted_count
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    def notified(self, subscription: str, resources: list[str]) -> dict[str, int]:
        """The resources ("Type/id") of `resources` the subscription was notified of (a version,
        not a deletion), with the lane it was."""
        query = {"sub": subscription, "res": {"$in": resources}, "del": False}
        return {doc["res"]: doc["lane"] for doc in self.events.find(query, {"res": 1, "lane": 1})}

    # -- the delivery's side ------------------------------------------------------------------
    def head(self, subscription: str, lane: int) -> dict | None:
        """The lane's first pending notification (sent before any other of the lane)."""
        query = {"sub": subscription, "lane": lane, "state": PENDING}
        return next(iter(self.events.find(query).sort(ORDER).limit(1)), None)

    def sent(self, event_id: str) -> None:
        self.events.update_one(
            {"_id": event_id},
            {"$set": {"state": SENT, "sent": utc_now()}, "$inc": {"attempts": 1}, "$unset": {"reason": ""}},
        )

    def failed(self, event_id: str, reason: str, retry_in: timedelta) -> int:
        """One more failed try, the next not before `retry_in`; returns the tries so far."""
        doc = self.events.find_one_and_update(
            {"_id": event_id},
            {"$inc": {"attempts": 1}, "$set": {"reason": reason, "due": utc_now() + retry_in}},
            return_document=True,
        )
        return int(doc["attempts"]) if doc else 0

    def drop_one(self, event_id: str) -> None:
        """Not to be sent (the subscriber may no longer read it, or its version was purged)."""
        self.events.update_one({"_id": event_id}, {"$set": {"state": DROPPED}})

    def hold(self, subscription: str) -> int:
        """The subscription is not active: its pending notifications wait for it."""
        return self.events.update_many(
            {"sub": subscription, "state": PENDING}, {"$set": {"state": HELD}}
        ).modified_count

    def release(self, subscription: str) -> list[int]:
        """The subscription is active again: what waited is pending, due now, each try counted
        afresh. Returns the lanes that have pending notifications."""
        self.events.update_many(
            {"sub": subscription, "state": {"$in": [HELD, PENDING]}},
            {"$set": {"state": PENDING, "due": utc_now(), "attempts": 0}},
        )
        return sorted(self.events.distinct("lane", {"sub": subscription, "state": PENDING}))

    def drop(self, subscription: str) -> int:
        """The subscription is deleted or over: nothing it waited for will be sent."""
        query = {"sub": subscription, "state": {"$in": [PENDING, HELD]}}
        return self.events.update_many(query, {"$set": {"state": DROPPED}}).modified_count

    def ready_lanes(self, now: datetime | None = None, limit: int = 10_000) -> list[tuple[str, int]]:
        """The (subscription, lane) pairs whose first pending notification is due."""
        now = now or utc_now()
        heads: dict[tuple[str, int], dict] = {}
        fields = {"sub": 1, "lane": 1, "pos": 1, "ord": 1, "due": 1}
        for doc in self.events.find({"state": PENDING}, fields).limit(limit):
            key = (doc["sub"], doc["lane"])
            head = heads.get(key)
            if head is None or (doc["pos"], doc["ord"]) < (head["pos"], head["ord"]):
                heads[key] = doc
        return sorted(key for key, head in heads.items() if _naive(head["due"]) <= _naive(now))

    def purge(self, written_before: datetime, gone: list[str]) -> dict[str, int]:
        """Notifications of writes committed before `written_before` (the resources they name are
        past their retention), and the subscribers of the Subscriptions in `gone`."""
        events = self.events.delete_many({"at": {"$lt": _naive(written_before)}}).deleted_count
        subscribers = self.subscribers.delete_many({"_id": {"$in": gone}}).deleted_count
        return {"subscription notifications": events, "subscribers": subscribers}

    def subscriber_ids(self) -> list[str]:
        return [doc["_id"] for doc in self.subscribers.find({}, {"_id": 1})]

    def counts(self, subscription: str | None = None) -> dict[str, int]:
        query = {"sub": subscription} if subscription else {}
        return {
            state: self.events.count_documents({**query, "state": state}) for state in (PENDING, HELD, SENT, DROPPED)
        }


def _same_principal(known: dict | None, principal: dict | None) -> bool:
    if known is None or principal is None:
        return known is None and principal is None
    return (known.get("kind"), known.get("id")) == (principal.get("kind"), principal.get("id"))


def _naive(moment: datetime) -> datetime:
    """MongoDB gives naive UTC datetimes back; compare like with like."""
    return moment.replace(tzinfo=None)
