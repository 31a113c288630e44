"""RQ wiring of the platform: the queue (queue.py), the outbox dispatcher (dispatcher.py), the
jobs (jobs/, one module each) and the channels they send through (channels/).

`workers.Worker` is RQ's worker with three changes:
- it runs jobs in its own process rather than forking one per job (RQ's SimpleWorker): a job then
  finds its database connections, channels and imported code ready from the previous one, which
  makes a delivery cost milliseconds instead of a process start; a job still stops at its timeout;
- a job whose worker dies (killed, its machine lost) counts as abandoned WORKER_HEARTBEAT_GRACE
  seconds after its timeout, for the dispatcher's registry clean-up to hand it to another worker
  (hence short job timeouts: NOTIFY_JOB_TIMEOUT);
- it redacts its log records like the web processes (fhir_server/logs.py): RQ logs each job's
  description, its arguments included, and the tracebacks of failed jobs.

    rq worker --url "$REDIS_URL" --worker-class workers.Worker sidep   # or: python -m workers
"""

from rq import SimpleWorker

from fhir_server.logs import install_filter
from fhir_server.settings import Settings


class Worker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        install_filter()
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = Settings.from_env().worker_heartbeat_grace

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return max(int((job.timeout or 0) - working_time), 1) + self.heartbeat_grace
