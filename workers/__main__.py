"""`python -m workers [--url REDIS_URL] [--queue NAME]`: an RQ worker on the platform's queue (same
as `rq worker --url REDIS_URL --worker-class workers.Worker sidep`)."""

import argparse
import os

from . import Worker
from .queue import QUEUE_NAME, connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"), help="Redis URL (default: $REDIS_URL)")
    parser.add_argument(
        "--queue", default=os.environ.get("RQ_QUEUE", QUEUE_NAME), help="queue (default: $RQ_QUEUE or sidep)"
    )
    args = parser.parse_args()
    if not args.url:
        parser.error("no Redis URL: pass --url or set REDIS_URL")
    Worker([args.queue], connection=connection(args.url)).work(with_scheduler=True)


if __name__ == "__main__":
    main()
