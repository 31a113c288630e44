"""The outbox as the operators' console sees it: events by state, the failed ones, and putting a
failed event back to "new" so that the dispatcher takes it again. (The dispatcher itself, which
moves events from "new" to "dispatched" or "failed", lives in workers/.)"""

from __future__ import annotations

from bson import ObjectId
from bson.errors import InvalidId

from .accounts import utc_now
from .mongo import OUTBOX

STATES = ("new", "dispatched", "failed")


class Outbox:
    def __init__(self, db):
        self.events = db[OUTBOX]

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
        try:
            key = ObjectId(event_id)
        except (InvalidId, TypeError):
            return False
        result = self.events.update_one(
            {"_id": key, "state": "failed"}, {"$set": {"state": "new", "retried": utc_now()}, "$inc": {"retries": 1}}
        )
        return bool(result.modified_count)
