"""The change log: what each committed unit of work wrote, in the order consumers read it.

A unit of work that writes resources adds one entry to `_changes` in its own transaction
(`{_id: ObjectId, ts, w: [[type, id, version, deleted], ...]}`), so an entry exists exactly
when its writes are committed. Concurrent transactions commit in any order, so the entries'
ids are not a safe cursor: a slow transaction could commit an entry with a smaller id after a
consumer has read past it. A **sequencer** (one at a time, under the `sequencer` lease: the
dispatchers take turns) gives each committed entry its position (`seq`), in increasing order, as
it finds them: an entry is positioned only once committed, and always after every entry already
positioned. Consumers read positions after their cursor (`_cursors`), so none misses an entry or
reads one twice: the subscriptions' matcher, the pseudonymised feed.

Entries are removed once every consumer is past them and they are older than the retention of
the change log (CHANGE_LOG_RETENTION_HOURS).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pymongo import ASCENDING, ReturnDocument, UpdateOne

from .accounts import utc_now
from .mongo import CHANGES

CURSORS = "_cursors"  # consumer name -> the last position it has finished
COUNTERS = "_counters"


class Changes:
    def __init__(self, db):
        self.db = db
        self.entries = db[CHANGES]
        self.cursors = db[CURSORS]
        self.counters = db[COUNTERS]

    # -- the writers' side: UnitOfWork.flush ------------------------------------------------
    @staticmethod
    def entry(written: Iterable[tuple[str, str, int, bool]], at: datetime) -> dict:
        return {"ts": at, "pending": True, "w": [list(item) for item in written]}

    # -- the sequencer -------------------------------------------------------------------
    def sequence(self, limit: int = 1000) -> int:
        """Position the committed entries not positioned yet, oldest id first; call it under the
        sequencer lease only. Returns how many were positioned."""
        pending = list(self.entries.find({"pending": True}, {"_id": 1}).sort([("pending", 1), ("_id", 1)]).limit(limit))
        if not pending:
            return 0
        counter = self.counters.find_one_and_update(
            {"_id": CHANGES}, {"$inc": {"n": len(pending)}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        first = counter["n"] - len(pending) + 1
        positions = [
            UpdateOne({"_id": doc["_id"]}, {"$set": {"seq": first + offset}, "$unset": {"pending": ""}})
            for offset, doc in enumerate(pending)
        ]
        self.entries.bulk_write(positions, ordered=True)
        return len(pending)

    def waiting(self) -> int:
        """Committed entries not positioned yet (the sequencer is behind, or no dispatcher runs)."""
        return self.entries.count_documents({"pending": True})

    def head(self) -> int:
        """The last position given (0 before any)."""
        counter = self.counters.find_one({"_id": CHANGES})
        return int(counter["n"]) if counter else 0

    # -- the consumers' side -------------------------------------------------------------
    def after(self, position: int, limit: int) -> list[dict]:
        """Up to `limit` positioned entries after `position`, in order."""
        cursor = self.entries.find({"seq": {"$gt": position}}).sort("seq", ASCENDING).limit(limit)
        return list(cursor)

    def cursor(self, consumer: str) -> int:
        doc = self.cursors.find_one({"_id": consumer})
        return int(doc["seq"]) if doc else 0

    def advance(self, consumer: str, position: int) -> None:
        """Record that `consumer` has finished every entry up to `position` (never backwards)."""
        self.cursors.update_one({"_id": consumer}, {"$max": {"seq": position}}, upsert=True)

    def lagging(self, consumers: Iterable[str]) -> list[str]:
        """The consumers whose cursor is behind the last position."""
        head = self.head()
        return [name for name, position in self.positions(consumers).items() if position < head]

    def positions(self, consumers: Iterable[str]) -> dict[str, int]:
        """Each consumer's cursor (0 before any), in one query."""
        names = list(consumers)
        found = {doc["_id"]: int(doc["seq"]) for doc in self.cursors.find({"_id": {"$in": names}})}
        return {name: found.get(name, 0) for name in names}

    def purge(self, consumers: Iterable[str], older_than: timedelta, now: datetime | None = None) -> int:
        """Remove entries every consumer has finished that are older than `older_than`."""
        done = min(self.positions(consumers).values(), default=self.head())
        before = (now or utc_now()) - older_than
        # led by the time (indexed), so that what is read is only what goes
        return self.entries.delete_many({"ts": {"$lt": before}, "seq": {"$lte": done}}).deleted_count
