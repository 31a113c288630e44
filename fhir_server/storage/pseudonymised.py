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

The aggregates (`daily_counts`, `daily_totals`) count the current records with a conclusive
result (detected or not-detected), by sampling day, département, age class: what Santé publique
France's `sp-pos-quot-dep` file publishes (fhir_server/aggregates.py lays them out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime

from pymongo import ASCENDING, InsertOne, ReplaceOne, ReturnDocument

from .accounts import utc_now

FEED = "_ph_feed"
RESULTS = "_ph_results"
COUNTERS = "_counters"
CURRENT, WITHDRAWN = "current", "withdrawn"
DETECTED, NOT_DETECTED = "detected", "not-detected"
CONCLUSIVE = (DETECTED, NOT_DETECTED)  # an inconclusive result is no test of the person's status


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
        # the aggregates of one département (one hundredth of the records: 75x faster measured)
        self.results.create_index([("rec.departement", ASCENDING), ("rec.sampling_date", ASCENDING)])

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

    # -- aggregates -----------------------------------------------------------------------------
    def daily_counts(
        self, start: date, end: date, test_type: str | None = None, departement: str | None = None
    ) -> list[dict]:
        """Conclusive results sampled from `start` to `end` (both included), of one test type and
        one département when given: `{jour, dep, age, P, T}` per (sampling day, département, age
        class) with at least one (`age` None for the records without age class). Records without
        département or sampling day are in no row."""
        by = {"jour": "$rec.sampling_date", "dep": "$rec.departement", "age": "$rec.age_class"}
        pipeline = [*_conclusive(start, end, test_type, departement), _count_by(by)]
        return [{**row["_id"], "P": row["P"], "T": row["T"]} for row in self.results.aggregate(pipeline)]

    def daily_totals(
        self, start: date, end: date, test_type: str | None = None, departement: str | None = None
    ) -> list[dict]:
        """The same results by sampling day alone (every département, or the one given):
        `{jour, P, T}`, for the chart."""
        pipeline = [*_conclusive(start, end, test_type, departement), _count_by("$rec.sampling_date")]
        return [{"jour": row["_id"], "P": row["P"], "T": row["T"]} for row in self.results.aggregate(pipeline)]

    # -- retention -----------------------------------------------------------------------------
    def forget_results(self, report_ids: list[str]) -> int:
        """The results are purged: their records stay (public health keeps them longer) but no
        longer say which report they were."""
        return self.results.update_many({"rid": {"$in": report_ids}}, {"$unset": {"rid": ""}}).modified_count

    def purge_before(self, before: datetime) -> int:
        removed = self.feed.delete_many({"at": {"$lt": before}}).deleted_count
        return removed + self.results.delete_many({"at": {"$lt": before}}).deleted_count


def _conclusive(start: date, end: date, test_type: str | None, departement: str | None) -> list[dict]:
    """The $match stages of the current records with a conclusive result sampled in [start, end]
    (ISO days compare as text), of the test type and département when given. The first stage
    is exactly what an index serves — the sampling day's range, with the département's equality
    before it — because SecantusDB only walks an index when it covers every field of the stage
    (MongoDB merges the two stages and plans as it likes); the rest is checked on what it finds."""
    served: dict = {"rec.sampling_date": {"$gte": start.isoformat(), "$lte": end.isoformat()}}
    rest: dict = {"state": CURRENT, "rec.result": {"$in": list(CONCLUSIVE)}}
    if departement:
        served = {"rec.departement": departement, **served}
    else:
        rest["rec.departement"] = {"$ne": None}
    if test_type:
        rest["rec.test_type"] = test_type
    return [{"$match": served}, {"$match": rest}]


def _count_by(key) -> dict:
    """T (the results) and P (the detected ones) per `key`."""
    return {
        "$group": {
            "_id": key,
            "T": {"$sum": 1},
            "P": {"$sum": {"$cond": [{"$eq": ["$rec.result", DETECTED]}, 1, 0]}},
        }
    }


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
