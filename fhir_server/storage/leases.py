"""Leases: one holder at a time for work that must not run twice at once (the change log's
sequencer, a consumer of the change log, a subscription's delivery lane).

A lease is a document `{_id: name, holder, until}`; taking it succeeds when it is free, expired,
or already the taker's; a holder that dies loses it when `until` passes. Holders renew it while
they work and release it when done.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from .accounts import utc_now

LEASES = "_leases"


class Leases:
    def __init__(self, db):
        self.leases = db[LEASES]

    def take(self, name: str, holder: str, seconds: float, now: datetime | None = None) -> bool:
        """Take or renew `name` for `holder` for `seconds`; False when another holds it."""
        now = now or utc_now()
        until = now + timedelta(seconds=seconds)
        free = {"_id": name, "$or": [{"holder": holder}, {"until": {"$lt": now}}]}
        try:
            self.leases.update_one(free, {"$set": {"holder": holder, "until": until}}, upsert=True)
        except DuplicateKeyError:  # held by another: the upsert tried to insert a second one
            return False
        return True

    def release(self, name: str, holder: str) -> None:
        self.leases.delete_one({"_id": name, "holder": holder})

    def holder(self, name: str, now: datetime | None = None) -> str | None:
        doc = self.leases.find_one({"_id": name, "until": {"$gte": now or utc_now()}})
        return doc["holder"] if doc else None
