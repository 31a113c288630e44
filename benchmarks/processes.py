"""The platform run for a benchmark: its web server in this process on a fresh database and
queue (`serve`), and `python -m <module>` processes with the environment that gives them the
same settings (`start`, with fhir_server/settings.py process_environment)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import requests
from werkzeug.serving import BaseWSGIServer, make_server

from fhir_server import create_app
from fhir_server.embedded import free_port, start_mongo, start_redis
from fhir_server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def wait_until_up(base_url: str, tries: int = 150) -> None:
    """Until the FHIR server at `base_url` answers its capability statement (0.2 s between tries)."""
    for _ in range(tries):
        try:
            requests.get(f"{base_url}/metadata", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def serve(mongo_uri: str, redis_url: str, var_dir: str, **overrides) -> tuple[Settings, object, BaseWSGIServer]:
    """(settings, app, server): the web server on its own port, database and queue."""
    port = free_port()
    settings = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        queue_name=f"bench-{uuid.uuid4().hex[:8]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=var_dir,
    ).but(**overrides)
    app = create_app(settings)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return settings, app, server


def stream_then_drain(doc: str, header: Iterable[str], run: Callable[..., dict], row: Callable[[dict], tuple]) -> None:
    """The main of a pipeline benchmark (`--results`, `--workers`): on one embedded database and
    Redis, `run(workers, results, mongo_uri, redis_url, var_dir, drain)` with the results posted
    while the workers run, then posted before they start, for each number of workers; a table of
    `row(figures)` under `header`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp) / "db")
        redis = start_redis(Path(tmp) / "redis")
        try:
            print(" ".join(f"{h:>10}" for h in header))
            for drain in (False, True):
                for workers in args.workers:
                    figures = run(workers, args.results, mongo.uri, redis.url, str(Path(tmp) / "var"), drain)
                    print(" ".join(f"{v:>10}" for v in row(figures)), flush=True)
        finally:
            redis.stop()
            mongo.stop()


def delays(figures: dict) -> tuple[str, str]:
    """p50 and p95 of a streamed run; a drain has none."""
    if figures["mode"] == "drain":
        return ("-", "-")
    return (f"{figures['p50']:.2f}", f"{figures['p95']:.2f}")
