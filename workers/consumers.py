"""Consumers of the change log (fhir_server/storage/changes.py): jobs that read every committed
write in order, each from its own cursor.

The dispatcher positions new entries (it holds the sequencer lease in turn) and enqueues the job
of each consumer whose cursor is behind, one job per consumer at a time (a fixed job id). The job
takes the consumer's lease, hands each batch of entries after the cursor to the consumer's
`handle`, advances the cursor once the batch is handled, and goes on until it has caught up or
spent CONSUMER_JOB_SECONDS (the dispatcher enqueues it again). A job killed mid-batch leaves the
cursor where it was: the next job handles that batch again, so `handle` must be idempotent
(delivery ids, feed positions). A second job finding the lease taken returns at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from fhir_server.storage.changes import Changes
from fhir_server.storage.leases import Leases

from .context import context

log = logging.getLogger("workers.consumers")

# consumer name -> its job (a function taking no argument that calls `consume`)
CONSUMERS = {
    "pseudonymised-feed": "workers.jobs.feed.publish",
    "subscriptions": "workers.jobs.subscription_match.match",
}
CONSUMER_JOB_SECONDS = 20.0


def job_id(name: str) -> str:
    return f"consume-{name}"


def consume(name: str, handle: Callable[[list[dict]], None], budget: float = CONSUMER_JOB_SECONDS) -> int:
    """Hand the entries after `name`'s cursor to `handle`, batch by batch, under its lease.
    Returns how many entries were handled."""
    ctx = context()
    settings = ctx.settings
    changes, leases = Changes(ctx.store.db), Leases(ctx.store.db)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    lease = f"consumer:{name}"
    if not leases.take(lease, holder, settings.lease_seconds):
        return 0
    handled, started = 0, time.monotonic()
    try:
        position = changes.cursor(name)  # only this lease's holder moves it
        while time.monotonic() - started < budget:
            entries = changes.after(position, settings.change_log_batch)
            if not entries:
                break
            handle(entries)
            position = entries[-1]["seq"]
            changes.advance(name, position)
            handled += len(entries)
            if len(entries) < settings.change_log_batch:
                break  # caught up: the dispatcher wakes the job again when more is positioned
            if not leases.take(lease, holder, settings.lease_seconds):
                log.warning("consumer %s lost its lease: another job goes on", name)
                break
    finally:
        leases.release(lease, holder)
    return handled
