"""RQ wiring of the platform: the queue (queue.py), the outbox dispatcher (dispatcher.py), the
jobs (jobs/, one module each) and the channels they send through (channels/).

`workers.Worker` is RQ's worker with two changes:
- it redacts its log records like the web processes (fhir_server/logs.py): RQ logs each job's
  description, its arguments included, and the tracebacks of failed jobs;
- a job whose worker stops sending heartbeats (killed, its machine lost) counts as abandoned after
  WORKER_HEARTBEAT_GRACE seconds rather than RQ's fixed minute, so that the dispatcher's registry
  clean-up hands it to another worker sooner.

    rq worker --url "$REDIS_URL" --worker-class workers.Worker sidep   # or: python -m workers
"""

from rq import Worker as _RQWorker

from fhir_server.logs import install_filter
from fhir_server.settings import Settings


class Worker(_RQWorker):
    def __init__(self, *args, **kwargs):
        install_filter()
        settings = Settings.from_env()
        kwargs.setdefault("job_monitoring_interval", settings.worker_heartbeat_seconds)
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = settings.worker_heartbeat_grace

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + self.heartbeat_grace
