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
