"""The queue behind a small interface: jobs are plain functions enqueued by name with ids."""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from rq import Queue

QUEUE_NAME = "sidep"


@lru_cache(maxsize=8)
def connection(url: str) -> Redis:
    return Redis.from_url(url)


def queue(url: str, name: str = QUEUE_NAME) -> Queue:
    return Queue(name, connection=connection(url))


def changes_queue_name(name: str = QUEUE_NAME) -> str:
    """The queue of what follows the change log (its consumers, workers/consumers.py, and the
    subscriptions' delivery lanes): a worker takes its jobs before the others, so that a backlog
    of notifications does not delay the feed and the subscribers."""
    return f"{name}-changes"


def worker_queues(name: str = QUEUE_NAME) -> list[str]:
    """What a worker listens on, first queue first."""
    return [changes_queue_name(name), name]
