"""`python -m terminology reload`: re-read the code lists and print what was loaded.

A running server reloads through `terminology.service.get_service().reload()` (wired to an admin endpoint
by the core); this command checks the files parse and expand, which is what an operator wants before that.
"""

from __future__ import annotations

import argparse
import sys

from .service import get_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m terminology", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["reload"], help="reload: load every code list and report counts")
    parser.parse_args(argv)
    summary = get_service().reload()
    print(f"{len(summary['codeSystems'])} code systems:")
    for url, count in summary["codeSystems"].items():
        print(f"  {url}: {count} concepts")
    print(f"{len(summary['valueSets'])} value sets:")
    for url, count in summary["valueSets"].items():
        print(f"  {url}: {count} codes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
