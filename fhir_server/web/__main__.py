"""`python -m fhir_server.web users add|list|unlock|disable|enable|password`: web user accounts.

    python -m fhir_server.web users add --login m.durand --name "Marie Durand" --role pharmacist \\
        --org 750000019 --org-name "Pharmacie du Marché" --site 750000027 [--rpps 10000000008]
    python -m fhir_server.web users add --login j.martin --name "Jean Martin" --role nurse --rpps 10000000008
    python -m fhir_server.web users list
    python -m fhir_server.web users unlock LOGIN
    python -m fhir_server.web users disable LOGIN | enable LOGIN
    python -m fhir_server.web users password LOGIN

`add` asks for the password (or reads it from the environment variable SIDEP_USER_PASSWORD),
then prints the TOTP provisioning URI (otpauth://...) once: the user scans it into their
authenticator application. Roles: laboratory (laboratory staff), pharmacist, nurse, doctor,
public-health, operator. Laboratory staff and pharmacists belong to an organisation (FINESS
juridique and its sites); nurses and doctors have an RPPS number and may have an organisation.

The database is MONGODB_URI / MONGODB_DB, or the embedded database of a running
`python -m fhir_server run` (its URI is kept in VAR_DIR/mongodb.uri).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from profiles.validators import check_rpps, is_valid_finess

from ..auth.__main__ import connect as connect_accounts
from ..auth.principal import UNRESTRICTED_ROLES
from ..settings import Settings
from ..storage.users import UserExists, Users
from .session import PROFESSIONALS, ROLE_LABORATORY, USER_ROLES

ISSUER = "SI-DEP"
MIN_PASSWORD = 12


def connect(settings: Settings | None = None) -> Users:
    return Users(connect_accounts(settings).db)


def provisioning_uri(secret: str, login: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name=ISSUER)


def check_account(role: str, org: str | None, sites: list[str], rpps: str | None) -> None:
    """The shape an account of `role` must have; SystemExit with the reason otherwise."""
    if role not in USER_ROLES:
        raise SystemExit(f"unknown role '{role}': one of {', '.join(USER_ROLES)}")
    for number in ([org] if org else []) + sites:
        if not is_valid_finess(number):
            raise SystemExit(f"'{number}' is not a valid FINESS number")
    if rpps and any(i.severity == "error" for i in check_rpps(rpps, "rpps")):
        raise SystemExit(f"'{rpps}' is not an RPPS number (11 digits)")
    if sites and not org:
        raise SystemExit("--site needs --org (the FINESS juridique the sites belong to)")
    if role in UNRESTRICTED_ROLES:
        return
    if role in (ROLE_LABORATORY, "pharmacist") and not (org and sites):
        raise SystemExit(f"a {role} account belongs to an organisation: give --org and at least one --site")
    if role in PROFESSIONALS and not (org or rpps):
        raise SystemExit(f"a {role} account needs an organisation (--org, --site) or an RPPS number (--rpps)")


def _password(prompt: bool = True) -> str:
    password = os.environ.get("SIDEP_USER_PASSWORD")
    if not password and prompt:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("the passwords differ")
    if not password or len(password) < MIN_PASSWORD:
        raise SystemExit(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def add(args, users: Users) -> int:
    sites = list(args.site or [])
    check_account(args.role, args.org, sites, args.rpps)
    try:
        doc = users.create_user(
            args.login, _password(), args.name, args.role, args.org, sites, args.rpps, args.org_name
        )
    except UserExists:
        raise SystemExit(f"a user '{args.login}' already exists") from None
    print(f"user {doc['_id']} ({doc['role']}) created")
    print(
        f"TOTP provisioning URI (shown once; scan it into the authenticator app):\n  "
        f"{provisioning_uri(doc['totp'], doc['_id'])}"
    )
    return 0


def list_users(args, users: Users) -> int:
    rows = users.list_users()
    for row in rows:
        state = "active" if row.get("active") else "disabled"
        clients = users.locked_clients(row["_id"])
        locked = f" LOCKED({clients} client{'s' if clients > 1 else ''})" if clients else ""
        print(
            f"{row['_id']}  {state}{locked}  {row.get('role', ''):13}  org={row.get('org') or '-'} "
            f"sites={','.join(row.get('sites') or []) or '-'}  rpps={row.get('rpps') or '-'}  {row.get('name', '')}"
        )
    if not rows:
        print("no users")
    return 0


def unlock(args, users: Users) -> int:
    if not users.unlock(args.login):
        raise SystemExit(f"no user {args.login}")
    print(f"{args.login} unlocked")
    return 0


def set_active(active: bool):
    def run(args, users: Users) -> int:
        if not users.set_active(args.login, active):
            raise SystemExit(f"no user {args.login}")
        print(f"{args.login} {'enabled' if active else 'disabled (its sessions are ended)'}")
        return 0

    return run


def password(args, users: Users) -> int:
    if not users.set_password(args.login, _password()):
        raise SystemExit(f"no user {args.login}")
    print(f"new password set for {args.login}")
    return 0


def main(argv: list[str] | None = None, users: Users | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_server.web", description=__doc__.split("\n\n")[0])
    groups = parser.add_subparsers(dest="group", required=True)
    commands = groups.add_parser("users", help="web user accounts").add_subparsers(dest="command", required=True)
    p = commands.add_parser("add", help="create a user; prints the TOTP provisioning URI once")
    p.add_argument("--login", required=True)
    p.add_argument("--name", required=True, help="the user's full name, as shown and audited")
    p.add_argument("--role", required=True, choices=USER_ROLES)
    p.add_argument("--org", help="FINESS juridique of the organisation the user works for")
    p.add_argument("--org-name")
    p.add_argument("--site", action="append", help="a FINESS géographique of the organisation (repeat)")
    p.add_argument("--rpps", help="the professional's RPPS number")
    p.set_defaults(run=add)
    commands.add_parser("list", help="list users (never their secrets)").set_defaults(run=list_users)
    for name, run, text in (
        ("unlock", unlock, "clear the lock-outs of the account's clients after failed logins"),
        ("disable", set_active(False), "disable a user and end their sessions"),
        ("enable", set_active(True), "enable a disabled user"),
        ("password", password, "set a new password"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("login")
        p.set_defaults(run=run)
    args = parser.parse_args(argv)
    return args.run(args, users or connect())


if __name__ == "__main__":
    sys.exit(main())
