"""The platform run for a benchmark: its web server in this process on a fresh database and
queue (`serve`), and `python -m <module>` processes with the environment that gives them the
same settings (`start`, with fhir_server/settings.py process_environment)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, make_server

from fhir_server import create_app
from fhir_server.embedded import free_port
from fhir_server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def serve(mongo_uri: str, redis_url: str, var_dir: str, **overrides) -> tuple[Settings, object, BaseWSGIServer]:
    """(settings, app, server): the web server on its own port, database and queue."""
    port = free_port()
    settings = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        queue_name=f"bench-{uuid.uuid4().hex[:8]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=var_dir,
    ).but(**overrides)
    app = create_app(settings)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return settings, app, server
