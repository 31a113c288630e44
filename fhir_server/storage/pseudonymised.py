"""The pseudonymised records of results, for public health (fhir_server/pseudonyms.py says what
a record holds): an append-only feed in commit order, and the current record of each result.

- `_ph_feed` (the real-time feed): `{_id: position, at, result, state, rec}`, positions 1, 2, 3…
  with no gap, appended by one writer at a time (the feed job, under its lease), so that a
  consumer reading "after my last position" never misses an entry nor reads one twice. `state`
  is `current` (the result as it now is; a later entry with the same `result` replaces it) or
  `withdrawn` (the result was deleted or entered in error: count it no more; `rec` is empty).
- `_ph_results` (what the aggregates and `$export` read): one document per result, the latest
  entry's: `{_id: result, rid, position, at, state, rec}`. `rid` (the DiagnosticReport's id) is
  what lets a later change of the result find its key; the results purge removes it with the
  result, so a record outliving its result links to nothing.

`result` is a key of the result that tells nothing of it (pseudonyms.result_key), stable across
changes, so consumers replace rather than double-count. Both collections are kept
PSEUDONYMISED_RETENTION_MONTHS (by `at`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ASCENDING, InsertOne, ReplaceOne, ReturnDocument

from .accounts import utc_now

FEED = "_ph_feed"
RESULTS = "_ph_results"
COUNTERS = "_counters"
CURRENT, WITHDRAWN = "current", "withdrawn"


class PseudonymisedRecords:
    def __init__(self, db):
        self.feed = db[FEED]
        self.results = db[RESULTS]
        self.counters = db[COUNTERS]

    def ensure_indexes(self) -> None:
        self.feed.create_index([("at", ASCENDING)])
        self.results.create_index([("rid", ASCENDING)], sparse=True)
        self.results.create_index([("at", ASCENDING)])
        self.results.create_index([("position", ASCENDING)])
        self.results.create_index([("rec.sampling_date", ASCENDING)])

    # -- the feed job's side (one writer at a time) -----------------------------------------
    def published(self, report_ids: Iterable[str]) -> dict[str, dict]:
        """report id -> its current record (`_id` the result key given to it, `state`, `rec`)."""
        docs = self.results.find({"rid": {"$in": list(report_ids)}}, {"state": 1, "rec": 1, "rid": 1})
        return {doc["rid"]: doc for doc in docs}

    def append(self, items: list[dict], at: datetime | None = None) -> int:
        """Append one entry per item (`{"result", "rid", "rec"}`, `rec` None for a withdrawn
        result) and make it the result's current record. Returns the last position."""
        if not items:
            return self.last_position()
        at = at or utc_now()
        counter = self.counters.find_one_and_update(
            {"_id": FEED}, {"$inc": {"n": len(items)}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        first = counter["n"] - len(items) + 1
        entries = [_entry(first + offset, item, at) for offset, item in enumerate(items)]
        self.feed.bulk_write([InsertOne(entry) for entry in entries], ordered=True)
        latest = {entry["result"]: (entry, item) for entry, item in zip(entries, items, strict=True)}
        self.results.bulk_write(
            [
                ReplaceOne({"_id": key}, {**_current(entry), "rid": item["rid"]}, upsert=True)
                for key, (entry, item) in latest.items()
            ],
            ordered=True,
        )
        return entries[-1]["_id"]

    def last_position(self) -> int:
        counter = self.counters.find_one({"_id": FEED})
        return int(counter["n"]) if counter else 0

    # -- readers -----------------------------------------------------------------------------
    def after(self, position: int, limit: int) -> list[dict]:
        """The feed's entries after `position`, in order, at most `limit`."""
        return list(self.feed.find({"_id": {"$gt": position}}).sort("_id", ASCENDING).limit(limit))

    def current(
        self, since: datetime | None = None, batch_size: int = 1000, until: datetime | None = None
    ) -> Iterator[dict]:
        """Every result's current record (withdrawn ones included), changed at or after `since`
        (and at or before `until`), streamed in position order: the cursor holds one batch."""
        window = {**({"$gte": since} if since else {}), **({"$lte": until} if until else {})}
        query = {"at": window} if window else {}
        return self.results.find(query, {"rid": 0}).sort("position", ASCENDING).batch_size(batch_size)

    # -- retention -----------------------------------------------------------------------------
    def forget_results(self, report_ids: list[str]) -> int:
        """The results are purged: their records stay (public health keeps them longer) but no
        longer say which report they were."""
        return self.results.update_many({"rid": {"$in": report_ids}}, {"$unset": {"rid": ""}}).modified_count

    def purge_before(self, before: datetime) -> int:
        removed = self.feed.delete_many({"at": {"$lt": before}}).deleted_count
        return removed + self.results.delete_many({"at": {"$lt": before}}).deleted_count


def _entry(position: int, item: dict, at: datetime) -> dict:
    withdrawn = item.get("rec") is None
    return {
        "_id": position,
        "at": at,
        "result": item["result"],
        "state": WITHDRAWN if withdrawn else CURRENT,
        "rec": {} if withdrawn else item["rec"],
    }


def _current(entry: dict) -> dict:
    return {
        "_id": entry["result"],
        "position": entry["_id"],
        "at": entry["at"],
        "state": entry["state"],
        "rec": entry["rec"],
    }
