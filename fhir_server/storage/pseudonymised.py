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

- `_ph_counts` (what the aggregates read): the current records with a conclusive result
  (detected or not-detected) counted as they are appended, in the same transaction, so that the
  counts are always those of `_ph_results`: a result that changes leaves its old cell and enters
  its new one, a withdrawn one leaves. Two levels: per (sampling day, département, age class)
  (`level` "d", age "-" when unknown) and per (sampling day, département) (`level` "j"), each
  `{T: {<test type>: n}, P: {<test type>: n}}` (type "-" when unknown). Counting a million
  records again for each question took about 50 s on SecantusDB; reading the cells of 90 days is
  one document per day × département (× age class). Records without département or sampling day
  are counted nowhere.

The aggregates (`daily_counts`, `daily_totals`) are what Santé publique France's
`sp-pos-quot-dep` file publishes (fhir_server/aggregates.py lays them out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date, datetime

from pymongo import ASCENDING, InsertOne, ReplaceOne, ReturnDocument, UpdateOne

from .accounts import utc_now

FEED = "_ph_feed"
RESULTS = "_ph_results"
COUNTS = "_ph_counts"
COUNTERS = "_counters"
BY_AGE, BY_DAY = "d", "j"  # the counts' levels: (day, département, age class), (day, département)
UNKNOWN = "-"
CURRENT, WITHDRAWN = "current", "withdrawn"
DETECTED, NOT_DETECTED = "detected", "not-detected"
CONCLUSIVE = (DETECTED, NOT_DETECTED)  # an inconclusive result is no test of the person's status


class PseudonymisedRecords:
    def __init__(self, db):
        self.feed = db[FEED]
        self.results = db[RESULTS]
        self.counts = db[COUNTS]
        self.counters = db[COUNTERS]
        self.client = db.client

    def ensure_indexes(self) -> None:
        self.feed.create_index([("at", ASCENDING)])
        self.results.create_index([("rid", ASCENDING)], sparse=True)
        self.results.create_index([("at", ASCENDING)])
        self.results.create_index([("position", ASCENDING)])
        # SecantusDB walks an index only when it covers every field of the query
        self.counts.create_index([("level", ASCENDING), ("jour", ASCENDING)])
        self.counts.create_index([("level", ASCENDING), ("dep", ASCENDING), ("jour", ASCENDING)])

    # -- the feed job's side (one writer at a time) -----------------------------------------
    def published(self, report_ids: Iterable[str]) -> dict[str, dict]:
        """report id -> its current record (`_id` the result key given to it, `state`, `rec`)."""
        docs = self.results.find({"rid": {"$in": list(report_ids)}}, {"state": 1, "rec": 1, "rid": 1})
        return {doc["rid"]: doc for doc in docs}

    def append(self, items: list[dict], at: datetime | None = None) -> int:
        """Append one entry per item (`{"result", "rid", "rec"}`, `rec` None for a withdrawn
        result), make it the result's current record and move the counts, in one transaction.
        Returns the last position."""
        if not items:
            return self.last_position()
        at = at or utc_now()
        with self.client.start_session() as session, session.start_transaction():
            counter = self.counters.find_one_and_update(
                {"_id": FEED},
                {"$inc": {"n": len(items)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            first = counter["n"] - len(items) + 1
            entries = [_entry(first + offset, item, at) for offset, item in enumerate(items)]
            keys = list(dict.fromkeys(entry["result"] for entry in entries))
            before = {doc["_id"]: doc for doc in self.results.find({"_id": {"$in": keys}}, session=session)}
            self.feed.bulk_write([InsertOne(entry) for entry in entries], ordered=True, session=session)
            latest = {entry["result"]: (entry, item) for entry, item in zip(entries, items, strict=True)}
            self.results.bulk_write(
                [
                    ReplaceOne({"_id": key}, {**_current(entry), "rid": item["rid"]})
                    if key in before
                    else InsertOne({**_current(entry), "rid": item["rid"]})
                    for key, (entry, item) in latest.items()
                ],
                ordered=True,
                session=session,
            )
            self._move_counts(before, {key: entry for key, (entry, _item) in latest.items()}, session)
        return entries[-1]["_id"]

    def restore(self, items: list[dict], at: datetime | None = None) -> int:
        """Append to a store holding none of these results (a restore, a load of synthetic
        records): each item's first entry and current record, inserted without looking up earlier
        ones nor moving counts — `count_earlier_records` counts them once the load is done.
        Returns the last position."""
        at = at or utc_now()
        counter = self.counters.find_one_and_update(
            {"_id": FEED}, {"$inc": {"n": len(items)}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        first = counter["n"] - len(items) + 1
        entries = [_entry(first + offset, item, at) for offset, item in enumerate(items)]
        self.feed.insert_many(entries, ordered=False)
        self.results.insert_many(
            [{**_current(entry), "rid": item["rid"]} for entry, item in zip(entries, items, strict=True)], ordered=False
        )
        return entries[-1]["_id"]

    def count_earlier_records(self) -> int:
        """Count the current records of a database written before the counts were kept (none
        yet, records there), in one transaction; returns how many were counted."""
        if self.counts.find_one({}, {"_id": 1}) or not self.results.find_one({}, {"_id": 1}):
            return 0
        with self.client.start_session() as session, session.start_transaction():
            current = {doc["_id"]: doc for doc in self.results.find({}, {"state": 1, "rec": 1}, session=session)}
            self._move_counts({}, current, session)
        return len(current)

    def _move_counts(self, before: dict[str, dict], after: dict[str, dict], session) -> None:
        """Each changed result out of its old cells, into its new ones."""
        deltas = _count_deltas(before, after)
        if deltas:
            writes = [
                UpdateOne({"_id": cell}, {"$inc": increments, "$setOnInsert": _cell_fields(cell)}, upsert=True)
                for cell, increments in deltas.items()
            ]
            self.counts.bulk_write(writes, ordered=False, session=session)

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
        class) with at least one (`age` None for the records without age class)."""
        rows = []
        for cell in self._cells(BY_AGE, start, end, departement):
            tests, positives = _of_type(cell, test_type)
            if tests:
                age = None if cell["age"] == UNKNOWN else cell["age"]
                rows.append({"jour": cell["jour"], "dep": cell["dep"], "age": age, "P": positives, "T": tests})
        return rows

    def daily_totals(
        self, start: date, end: date, test_type: str | None = None, departement: str | None = None
    ) -> list[dict]:
        """The same results by sampling day alone (every département, or the one given):
        `{jour, P, T}`, for the chart."""
        tests: Counter = Counter()
        positives: Counter = Counter()
        for cell in self._cells(BY_DAY, start, end, departement):
            t, p = _of_type(cell, test_type)
            tests[cell["jour"]] += t
            positives[cell["jour"]] += p
        return [{"jour": day, "P": positives[day], "T": tests[day]} for day in sorted(tests) if tests[day]]

    def _cells(self, level: str, start: date, end: date, departement: str | None) -> Iterator[dict]:
        query: dict = {"level": level}
        if departement:
            query["dep"] = departement
        query["jour"] = {"$gte": start.isoformat(), "$lte": end.isoformat()}
        return self.counts.find(query, {"_id": 0, "level": 0}).batch_size(10_000)

    # -- retention -----------------------------------------------------------------------------
    def forget_results(self, report_ids: list[str]) -> int:
        """The results are purged: their records stay (public health keeps them longer) but no
        longer say which report they were."""
        return self.results.update_many({"rid": {"$in": report_ids}}, {"$unset": {"rid": ""}}).modified_count

    def purge_before(self, before: datetime) -> int:
        """Entries and records written before `before`, and the counts of the days sampled
        before it."""
        removed = self.feed.delete_many({"at": {"$lt": before}}).deleted_count
        for level in (BY_AGE, BY_DAY):  # led by the level, as the counts' indexes are
            self.counts.delete_many({"level": level, "jour": {"$lt": before.date().isoformat()}})
        return removed + self.results.delete_many({"at": {"$lt": before}}).deleted_count


def _count_deltas(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict[str, int]]:
    """cell id -> its increments (`{"T.naat": 1, "P.naat": 1}`) for results going from their
    `before` record to their `after` one."""
    deltas: Counter = Counter()
    for key, entry in after.items():
        for cell, positive in _cells_of(before.get(key)):
            deltas[(cell, "T")] -= 1
            deltas[(cell, "P")] -= positive
        for cell, positive in _cells_of(entry):
            deltas[(cell, "T")] += 1
            deltas[(cell, "P")] += positive
    by_cell: dict[str, dict[str, int]] = {}
    for ((level, jour, dep, age, kind), field), delta in deltas.items():
        if delta:
            by_cell.setdefault("|".join((level, jour, dep, age)), {})[f"{field}.{kind}"] = delta
    return by_cell


def _cell_fields(cell: str) -> dict:
    level, jour, dep, age = cell.split("|")
    return {"level": level, "jour": jour, "dep": dep, "age": age}


def _cells_of(record: dict | None) -> list[tuple[tuple[str, str, str, str, str], int]]:
    """The cells a current record counts in (both levels), with 1 when it is positive."""
    rec = (record or {}).get("rec") or {}
    if not record or record.get("state") != CURRENT or rec.get("result") not in CONCLUSIVE:
        return []
    jour, dep = rec.get("sampling_date"), rec.get("departement")
    if not jour or not dep:
        return []
    kind = rec.get("test_type") or UNKNOWN
    positive = int(rec["result"] == DETECTED)
    age = rec.get("age_class") or UNKNOWN
    return [((BY_AGE, jour, dep, age, kind), positive), ((BY_DAY, jour, dep, "", kind), positive)]


def _of_type(cell: dict, test_type: str | None) -> tuple[int, int]:
    """(tests, positives) of a cell, of one test type or of all."""
    tests, positives = cell.get("T") or {}, cell.get("P") or {}
    if test_type:
        return tests.get(test_type, 0), positives.get(test_type, 0)
    return sum(tests.values()), sum(positives.values())


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
