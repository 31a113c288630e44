"""Public health's pseudonymised feed end to end: results posted over HTTP → change log → the
dispatcher's sequencer → the feed job in an RQ worker → `_ph_feed`. Prints, per number of worker
processes:

- stream: results posted while the workers run: results posted per second, the delay from
  result accepted to its record in the feed (p50, p95);
- drain: results posted first, then the dispatcher and workers started: records per second
  while the backlog drains;

The workers also send each result's SMS (to a local gateway), as on a real day: the feed shares
them with the notifications. A single feed job runs at a time (commit order), so more workers
speed the SMS, not the feed.

    .venv/bin/python benchmarks/bench_feed.py [--results 300] [--workers 1 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_notify import bundles  # noqa: E402
from processes import delays, serve, start, stream_then_drain  # noqa: E402

from fhir_server.outlets import start_sms_gateway  # noqa: E402
from fhir_server.settings import process_environment  # noqa: E402
from fhir_server.storage.pseudonymised import PseudonymisedRecords  # noqa: E402


def run(workers: int, count: int, mongo_uri: str, redis_url: str, var_dir: str, drain: bool) -> dict:
    gateway = start_sms_gateway()
    settings, app, server = serve(mongo_uri, redis_url, var_dir, auth_enabled=False, sms_gateway_url=gateway.url)
    records = PseudonymisedRecords(app.extensions["sidep.store"].db)
    # several batches: a pace to measure
    env = process_environment(settings, DISPATCH_IDLE_SECONDS="0.05", CHANGE_LOG_BATCH="100")
    processes = []

    def start_workers() -> None:
        processes.extend([start("workers.dispatcher", env)] + [start("workers", env) for _ in range(workers)])
        time.sleep(3)

    if not drain:
        start_workers()
    accepted: dict[str, float] = {}
    session = requests.Session()

    def post(item):
        _phone, bundle = item
        response = session.post(
            settings.base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60
        )
        response.raise_for_status()
        for entry in response.json()["entry"]:
            location = entry["response"]["location"]
            if location.startswith("DiagnosticReport/"):
                accepted[location.split("/")[1]] = time.time()

    work = bundles(count)
    posting = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, work))
    posted = time.time()
    if drain:
        start_workers()
    deadline = time.monotonic() + 600
    first: tuple[float, int] | None = None  # when the feed first moved, and where it then was
    while (position := records.last_position()) < count and time.monotonic() < deadline:
        if position and first is None:
            first = (time.time(), position)
        time.sleep(0.05)
    finished = time.time()
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)
    server.shutdown()
    gateway.stop()
    appended = {
        doc["rid"]: doc["at"].replace(tzinfo=UTC).timestamp() for doc in records.results.find({}, {"rid": 1, "at": 1})
    }
    delays = sorted(appended[rid] - accepted[rid] for rid in appended if rid in accepted)
    rate = (count - first[1]) / (finished - first[0]) if first and finished > first[0] else float("nan")
    return {
        "mode": "drain" if drain else "stream",
        "workers": workers,
        "records": len(appended),
        "post_rate": count / (posted - posting),
        "rate": rate,
        "p50": statistics.median(delays) if delays else float("nan"),
        "p95": delays[int(len(delays) * 0.95) - 1] if delays else float("nan"),
    }


def main() -> None:
    header = ("run", "workers", "records", "posted/s", "records/s", "p50 s", "p95 s")
    stream_then_drain(
        __doc__,
        header,
        run,
        lambda row: (
            row["mode"],
            row["workers"],
            row["records"],
            f"{row['post_rate']:.1f}",
            f"{row['rate']:.1f}",
            *delays(row),
        ),
    )


if __name__ == "__main__":
    main()
