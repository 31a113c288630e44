"""Real platform processes for tests: an RQ worker (`python -m workers`) on the test's database.

    worker = start_worker(settings, redis_url)
    try:
        ...  # enqueue work through the app, wait for its effect
    finally:
        stop(worker)

The worker gets the settings the app was built with (MONGODB_URI, MONGODB_DB, VAR_DIR for the
signing keys, FHIR_BASE_URL, REDIS_URL) and writes its log to `worker.log_path`, beside VAR_DIR. The platform's
queue is emptied first, so that a test's worker runs that test's jobs only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fhir_server.settings import Settings
from workers.queue import queue

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 10  # a warm shutdown finishes the current job; then the worker is killed


def start_worker(settings: Settings, redis_url: str, **env: str) -> subprocess.Popen:
    """An `rq worker` process (workers.Worker) on the platform's queue, with these settings."""
    queue(redis_url).empty()
    environment = {
        **os.environ,
        "MONGODB_URI": settings.mongodb_uri or "",
        "MONGODB_DB": settings.mongodb_db,
        "VAR_DIR": settings.var_dir,
        "FHIR_BASE_URL": settings.base_url,
        "REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    logs_dir = Path(settings.var_dir).parent  # the test's temporary directory
    logs_dir.mkdir(parents=True, exist_ok=True)
    log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", dir=logs_dir, delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "--url", redis_url],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    process.log_path = Path(log.name)  # type: ignore[attr-defined]
    return process


def stop(process: subprocess.Popen) -> None:
    """Terminate (RQ's warm shutdown), then kill if it does not end."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_text(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
