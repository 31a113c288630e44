"""Starting the platform's processes for a benchmark: `python -m <module>` with the environment
that gives it the benchmark's settings (fhir_server/settings.py process_environment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
