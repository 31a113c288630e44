"""RQ wiring of the platform: the queue (queue.py) and the worker class, `workers.Worker`, which
redacts its log records like the web processes (fhir_server/logs.py): RQ logs each job's
description, its arguments included, and the tracebacks of failed jobs.

    rq worker --url "$REDIS_URL" --worker-class workers.Worker sidep   # or: python -m workers
"""

from rq import Worker as _RQWorker

from fhir_server.logs import install_filter


class Worker(_RQWorker):
    def __init__(self, *args, **kwargs):
        install_filter()
        super().__init__(*args, **kwargs)
