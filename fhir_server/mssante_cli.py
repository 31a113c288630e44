"""The MSSanté directory from the command line (MONGODB_URI, MONGODB_DB):

    python -m fhir_server mailboxes load FILE                       # a new version, in service once loaded
    python -m fhir_server mailboxes route SITE_FINESS [LEGAL_FINESS] # where that site's certificates go
    python -m fhir_server mailboxes summary                         # the version in service

Output is JSON. `load` and `route` exit 1 on a bad extract or a routing failure, with the reason
(FINESS numbers and counts: no address, no name) on standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .mssante import ExtractError, parse_extract
from .settings import Settings
from .storage import mailboxes


def _directory() -> mailboxes.Directory:
    settings = Settings.from_env()
    if not settings.mongodb_uri:
        raise SystemExit("MONGODB_URI is not set: the directory lives in the platform's database")
    return mailboxes.connect(settings.mongodb_uri, settings.mongodb_db)


def _print(value: dict) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def load(args) -> int:
    try:
        report = _directory().load(parse_extract(args.file))
    except (ExtractError, OSError) as error:
        print(f"Chargement refusé, la version en service est conservée : {error}", file=sys.stderr)
        return 1
    _print(asdict(report))
    return 0


def route(args) -> int:
    found = _directory().route(args.site, args.legal)
    _print(asdict(found))
    if found.address is None:
        print(found.reason, file=sys.stderr)
        return 1
    return 0


def summary(args) -> int:
    _print(_directory().summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_server mailboxes", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    loading = commands.add_parser("load", help="load an ANS MSSanté extract as the new directory version")
    loading.add_argument("file")
    loading.set_defaults(run=load)
    routing = commands.add_parser("route", help="where a site's certificates go")
    routing.add_argument("site", metavar="SITE_FINESS")
    routing.add_argument("legal", metavar="LEGAL_FINESS", nargs="?")
    routing.set_defaults(run=route)
    commands.add_parser("summary", help="the directory version in service").set_defaults(run=summary)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
