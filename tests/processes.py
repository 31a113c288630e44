"""Real worker and dispatcher processes for tests: `python -m workers` and `python -m
workers.dispatcher`, started with the environment a test's settings describe, each in its own
process group (so that a test can SIGKILL a worker with the work horse it forked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fhir_server.settings import Settings, process_environment

ROOT = Path(__file__).resolve().parent.parent


platform_env = process_environment  # the name the tests use


def _start(module: str, settings: Settings, log: Path | None, extra: dict) -> subprocess.Popen:
    """`python -m module`; its output goes to `log`, else to a file beside the test's VAR_DIR."""
    if log is None:
        directory = Path(settings.var_dir).parent
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=f"{module}-", suffix=".log", dir=directory)
        os.close(descriptor)
        log = Path(name)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=platform_env(settings, PYTHONUNBUFFERED="1", **extra),
            cwd=str(ROOT),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log_path = log  # type: ignore[attr-defined]
    return process


def start_worker(settings: Settings, log: Path | None = None, **extra) -> subprocess.Popen:
    return _start("workers", settings, log, extra)


def start_dispatcher(settings: Settings, log: Path | None = None, **extra) -> subprocess.Popen:
    return _start("workers.dispatcher", settings, log, extra)


def log_text(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def descendants(pid: int) -> list[int]:
    """The processes `pid` forked, and theirs (from /proc: an RQ work horse is in a process group
    of its own, so a group kill misses it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it forked (a worker's work horse), as a crash would."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill(process)


def wait_for(condition, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll `condition` until it returns something true; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
