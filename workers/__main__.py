"""`python -m workers [--url REDIS_URL] [--queue NAME]`: an RQ worker on the platform's queues (same
as `rq worker --url REDIS_URL --worker-class workers.Worker sidep-changes sidep`: the change log's
consumers first, then every other job)."""

import argparse
import os

from fhir_server.settings import Settings

from . import Worker
from .channels.sms import SmsGateway
from .queue import QUEUE_NAME, connection, worker_queues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"), help="Redis URL (default: $REDIS_URL)")
    parser.add_argument(
        "--queue", default=os.environ.get("RQ_QUEUE", QUEUE_NAME), help="queue (default: $RQ_QUEUE or sidep)"
    )
    args = parser.parse_args()
    if not args.url:
        parser.error("no Redis URL: pass --url or set REDIS_URL")
    try:
        check_channels(Settings.from_env())
    except ValueError as exc:
        parser.error(str(exc))
    Worker(worker_queues(args.queue), connection=connection(args.url)).work()  # the dispatcher schedules retries


def check_channels(settings: Settings) -> None:
    """Refuse to start with an SMS template that does not fit one SMS or a bad sender id: better
    than failing every delivery."""
    SmsGateway.from_settings(settings)


if __name__ == "__main__":
    main()
