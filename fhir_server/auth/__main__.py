"""`python -m fhir_server.auth clients register|list|rotate|revoke`: the operators' command.

    python -m fhir_server.auth clients register --name "LIS Biolab" --org 750000019 \\
        --site 750000027 --site 750000035 [--scope "system/*.read system/*.write"] \\
        [--role laboratory|prescriber|operator|public-health|dmp-connector] [--jwks public-keys.json]
    python -m fhir_server.auth clients list
    python -m fhir_server.auth clients rotate CLIENT_ID [--jwks public-keys.json]
    python -m fhir_server.auth clients revoke CLIENT_ID

`register` prints the client_id and, for a secret client, the secret: once; only its hash is
kept. With --jwks the client authenticates with private_key_jwt (SMART Backend Services) and has
no secret. `rotate` issues a new secret (or installs a new JWK set); tokens already issued live
until they expire. `revoke` disables the client and makes every token it holds fail at once.

The database is MONGODB_URI / MONGODB_DB; when MONGODB_URI is unset, the embedded database of a
running `python -m fhir_server run` (its URI is kept in VAR_DIR/mongodb.uri).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from profiles.validators import is_valid_finess

from ..settings import Settings
from ..storage.accounts import Accounts
from .principal import ROLE_LABORATORY, ROLES, UNRESTRICTED_ROLES
from .scopes import ScopeError, Scopes

DEFAULT_SCOPE = "system/*.read system/*.write"
URI_FILE = "mongodb.uri"


def connect(settings: Settings | None = None) -> Accounts:
    settings = settings or Settings.from_env()
    uri = settings.mongodb_uri
    if not uri:
        path = Path(settings.var_dir) / URI_FILE
        if not path.exists():
            raise SystemExit(
                "MONGODB_URI is not set and no embedded database is running "
                f"({path} not found): start `python -m fhir_server run` or set MONGODB_URI"
            )
        uri = path.read_text().strip()
    return Accounts.connect(uri, settings.mongodb_db)


def _jwks(path: str | None) -> dict | None:
    if not path:
        return None
    data = json.loads(Path(path).read_text())
    jwks = data if "keys" in data else {"keys": [data]}
    for key in jwks["keys"]:
        if any(k in key for k in ("d", "p", "q", "k")):
            raise SystemExit(f"{path} holds a private key: register the public key only")
    return jwks


def register(args, accounts: Accounts) -> int:
    try:
        Scopes(args.scope)
    except ScopeError as exc:
        raise SystemExit(str(exc)) from None
    if any(not s.startswith("system/") for s in args.scope.split()):
        raise SystemExit("software clients get system/ scopes only")
    if args.role not in UNRESTRICTED_ROLES:
        if not args.org or not args.site:
            raise SystemExit(f"a {args.role} client is bound to an organisation: give --org and at least one --site")
    for number in ([args.org] if args.org else []) + list(args.site or []):
        if not is_valid_finess(number):
            raise SystemExit(f"'{number}' is not a valid FINESS number")
    doc, secret = accounts.register_client(
        args.name, args.org, args.site or [], " ".join(args.scope.split()), args.role, _jwks(args.jwks), args.org_name
    )
    print(f"client_id:     {doc['_id']}")
    if secret:
        print(f"client_secret: {secret}")
        print("(the secret is shown once: store it now; only its hash is kept)")
    else:
        print("authentication: private_key_jwt with the registered public key")
    return 0


def list_clients(args, accounts: Accounts) -> int:
    rows = accounts.list_clients()
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for row in rows:
        state = "active" if row.get("active") else "revoked"
        method = "private_key_jwt" if row.get("jwks") else "secret"
        print(
            f"{row['_id']}  {state:7}  {row.get('role', ''):13}  org={row.get('org') or '-'} "
            f"sites={','.join(row.get('sites') or []) or '-'}  {method}  scope='{row.get('scope', '')}'  {row.get('name', '')}"
        )
    if not rows:
        print("no clients")
    return 0


def rotate(args, accounts: Accounts) -> int:
    if args.jwks:
        if not accounts.set_jwks(args.client_id, _jwks(args.jwks)):
            raise SystemExit(f"no active client {args.client_id}")
        print(f"new public key set installed for {args.client_id}")
        return 0
    secret = accounts.rotate_secret(args.client_id)
    if secret is None:
        raise SystemExit(f"no active secret client {args.client_id}")
    print(f"client_id:     {args.client_id}\nclient_secret: {secret}\n(the old secret no longer works)")
    return 0


def revoke(args, accounts: Accounts) -> int:
    if not accounts.revoke_client(args.client_id):
        raise SystemExit(f"no client {args.client_id}")
    print(f"{args.client_id} revoked: it can get no token, and the tokens it holds fail from now on")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_server.auth", description=__doc__.split("\n\n")[0])
    groups = parser.add_subparsers(dest="group", required=True)
    clients = groups.add_parser("clients", help="OAuth2 software clients").add_subparsers(dest="command", required=True)
    p = clients.add_parser("register", help="register a client; prints its id and secret once")
    p.add_argument("--name", required=True)
    p.add_argument("--org", help="FINESS juridique of the organisation the client acts for")
    p.add_argument("--org-name")
    p.add_argument("--site", action="append", help="a FINESS géographique of the organisation (repeat)")
    p.add_argument("--scope", default=DEFAULT_SCOPE, help=f"SMART scopes (default: '{DEFAULT_SCOPE}')")
    p.add_argument("--role", choices=ROLES, default=ROLE_LABORATORY)
    p.add_argument("--jwks", help="a JSON file with the client's public JWK (set): private_key_jwt, no secret")
    p.set_defaults(run=register)
    p = clients.add_parser("list", help="list clients (never their secrets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=list_clients)
    p = clients.add_parser("rotate", help="issue a new secret (or install a new public key set)")
    p.add_argument("client_id")
    p.add_argument("--jwks")
    p.set_defaults(run=rotate)
    p = clients.add_parser("revoke", help="disable a client; its tokens fail at once")
    p.add_argument("client_id")
    p.set_defaults(run=revoke)
    args = parser.parse_args(argv)
    return args.run(args, connect())


if __name__ == "__main__":
    sys.exit(main())
