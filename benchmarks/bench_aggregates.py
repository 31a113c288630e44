"""Time of the aggregate query (fhir_server/aggregates.py `rows`, what `$aggregates` answers, and
`daily`, what the chart draws) over N synthetic pseudonymised records (fhir_server/synthetic/
pseudonymised.py, appended in batches of 10,000 as the feed job does), sampled over `--days`
days: the last 90 days for all départements and for one, read from the counts the appends keep
(storage/pseudonymised.py `_ph_counts`). Prints the time of the appends (the counts' cost) and of
the queries; asserts nothing.

    .venv/bin/python benchmarks/bench_aggregates.py [--records 1000000] [--days 120]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server import aggregates  # noqa: E402
from fhir_server.embedded import start_mongo  # noqa: E402
from fhir_server.storage.pseudonymised import PseudonymisedRecords  # noqa: E402
from fhir_server.synthetic.pseudonymised import records  # noqa: E402

BATCH = 10_000
END = date(2026, 11, 30)


def fill(store: PseudonymisedRecords, count: int, days: int) -> float:
    started, batch = time.perf_counter(), []
    for item in records(count, seed=7, days=days, end=END):
        batch.append(item)
        if len(batch) == BATCH:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)
    return time.perf_counter() - started


def timed(label: str, run, repeat: int) -> None:
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(run())
        times.append(time.perf_counter() - started)
    print(f"  {label:<44} {statistics.median(times):8.3f} s (median of {repeat})  {size} rows", flush=True)


def queries(store: PseudonymisedRecords, repeat: int) -> None:
    national = aggregates.Query(END - timedelta(days=89), END)
    one = aggregates.Query(END - timedelta(days=89), END, departement="75")
    timed("rows, 90 days, all départements", lambda: aggregates.rows(store, national), repeat)
    timed("rows, 90 days, département 75", lambda: aggregates.rows(store, one), repeat)
    antigen = aggregates.Query(national.start, national.end, test_type="antigen")
    timed("rows, 90 days, all départements, antigen", lambda: aggregates.rows(store, antigen), repeat)
    timed("daily (the chart), 90 days, all départements", lambda: aggregates.daily(store, national), repeat)
    timed("daily (the chart), 90 days, département 75", lambda: aggregates.daily(store, one), repeat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120, help="days the records' sampling dates spread over")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    mongo = start_mongo(tempfile.mkdtemp())
    try:
        store = PseudonymisedRecords(MongoClient(mongo.uri)["bench_aggregates"])
        store.ensure_indexes()
        seconds = fill(store, options.records, options.days)
        print(f"{options.records} records over {options.days} days appended in {seconds:.1f} s", flush=True)
        print(f"{store.counts.count_documents({})} count cells")
        queries(store, options.repeat)
    finally:
        mongo.stop()


if __name__ == "__main__":
    main()
