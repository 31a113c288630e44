"""The audit log: AuditEvent resources, appended in batches off the request path.

An AuditEvent is written once and never changed, so it needs none of what a resource write pays
for (transaction, version check, history entry, outbox): it is stored as version 1 of an
AuditEvent with its index fields (searchable by patient, agent, date ... like any resource) and
the organisation it concerns (`org`), and inserted by a background thread in one `insert_many`
per batch, so a request never waits for its audit record. `flush()` writes what is pending (tests,
shutdown). If the buffer is full the caller writes synchronously rather than drop an event; events
still buffered when the process is killed are lost (at most `interval` seconds of them).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time

from ..search.dates import instant, utc_now
from ..search.extract import index_fields
from .store import new_id

log = logging.getLogger(__name__)
COLLECTION = "AuditEvent"
MAX_BATCH = 500
MAX_PENDING = 20_000
IDLE_EXIT = 30.0  # seconds without events before the writer thread ends (it restarts on demand)


def purge_written_before(store, before) -> int:
    """Remove the AuditEvents written before `before` (a retention rule of their own: the trace of
    accesses is kept longer than the results it names). One statement, run by the database: nothing
    is read. Returns how many there were."""
    return store.collection(COLLECTION).delete_many({"ts": {"$lt": before}}).deleted_count


class AuditLog:
    def __init__(self, store, interval: float = 0.2):
        self.store = store
        self.collection = store.collection(COLLECTION)
        self.interval = interval
        self._queue: queue.Queue = queue.Queue(MAX_PENDING)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        atexit.register(self.flush)

    def document(self, event: dict, organisations: list[str] | None) -> dict:
        now = utc_now()
        rid = new_id()
        resource = {
            "resourceType": "AuditEvent",
            "id": rid,
            "meta": {"versionId": "1", "lastUpdated": instant(now)},
            **event,
        }
        doc = {
            "_id": rid,
            "v": 1,
            "ts": now,
            "del": False,
            "res": resource,
            **index_fields(COLLECTION, resource, self.store.base_url),
        }
        if organisations:
            doc["org"] = organisations
        return doc

    def record(self, event: dict, organisations: list[str] | None = None) -> str:
        """Queue one AuditEvent (the resource without id/meta); returns its id."""
        doc = self.document(event, organisations)
        if self.interval <= 0:
            self.collection.insert_one(doc)
            return doc["_id"]
        try:
            self._queue.put_nowait(doc)
        except queue.Full:
            self.collection.insert_one(doc)
            return doc["_id"]
        self._ensure_writer()
        return doc["_id"]

    def flush(self) -> None:
        """Write every queued event now."""
        while True:
            batch = self._take(MAX_BATCH)
            if not batch:
                break
            self._write(batch)
        self._queue.join()  # and a batch the writer thread took but has not written yet

    # -- the writer thread -----------------------------------------------------------------
    def _ensure_writer(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not here
                self._pid, self._thread = os.getpid(), None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            time.sleep(self.interval)  # let a batch gather
            self._write([first] + self._take(MAX_BATCH - 1))

    def _take(self, limit: int) -> list[dict]:
        batch: list[dict] = []
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[dict]) -> None:
        try:
            self.collection.insert_many(batch, ordered=False)
        except Exception:  # noqa: BLE001 - an audit failure is logged loudly, never silently dropped
            log.exception("could not write %d AuditEvents; retrying one by one", len(batch))
            for doc in batch:
                try:
                    self.collection.insert_one(doc)
                except Exception:  # noqa: BLE001
                    log.error("AuditEvent lost: %s", _identity(doc.get("res") or {}))
        finally:
            for _ in batch:
                self._queue.task_done()


def _identity(event: dict) -> str:
    """What a log may say of a lost AuditEvent: when, which interaction, which outcome, which agent
    (client or user id) and which resources — never the query, names or addresses it records."""
    subtype = ",".join(c.get("code", "") for c in event.get("subtype") or [])
    agents = ",".join(str(a.get("altId")) for a in event.get("agent") or [] if a.get("altId"))
    entities = ",".join(
        e["what"]["reference"]
        for e in event.get("entity") or []
        if isinstance(e.get("what"), dict) and e["what"].get("reference")
    )
    return (
        f"recorded={event.get('recorded')} subtype={subtype} outcome={event.get('outcome')} "
        f"agent={agents or '-'} entities={entities or '-'}"
    )
