"""First start on the embedded default: a demonstration pharmacist (a synthetic pharmacy, its
FINESS numbers with valid check digits) and a demonstration operator for the web UI at /ui.

Their passwords, TOTP secrets and provisioning URIs are kept in VAR_DIR/demo-users.json (mode 0600);
start-up prints the logins and where that file is, never a password or a secret. Accounts already
there are kept as they are.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
from pathlib import Path

from ..auth.demo import _private_write
from ..auth.principal import ROLE_OPERATOR
from ..storage.users import Users
from ..synthetic.generator import make_finess, make_rpps
from .__main__ import provisioning_uri

CREDENTIALS = "demo-users.json"
DEMO_SEED = 20210709  # the laboratory guide's date: the demonstration pharmacy never changes


def demo_pharmacy() -> dict:
    rng = random.Random(DEMO_SEED)
    return {
        "org": make_finess(rng, "75"),
        "site": make_finess(rng, "75"),
        "rpps": make_rpps(rng),
        "org_name": "Pharmacie de démonstration",
    }


def ensure_demo_users(users: Users, var_dir: str | Path, ui_url: str) -> dict:
    path = Path(var_dir) / CREDENTIALS
    saved = json.loads(path.read_text()) if path.exists() else {}
    pharmacy = demo_pharmacy()
    wanted = {
        "demo.pharmacien": dict(
            name="Camille Démo",
            role="pharmacist",
            organisation=pharmacy["org"],
            sites=[pharmacy["site"]],
            rpps=pharmacy["rpps"],
            organisation_name=pharmacy["org_name"],
        ),
        "demo.operateur": dict(name="Opérateur Démo", role=ROLE_OPERATOR),
    }
    changed = False
    for login, account in wanted.items():
        if login in saved and users.user(login) is not None:
            continue
        password = secrets.token_urlsafe(12)
        if users.user(login) is not None:  # the file was lost: new credentials for the same account
            users.delete_user(login)
        doc = users.create_user(login, password, **account)
        saved[login] = {
            "login": login,
            "password": password,
            "totp_secret": doc["totp"],
            "totp_uri": provisioning_uri(doc["totp"], login),
            "role": account["role"],
        }
        changed = True
    if changed:
        _private_write(path, json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    accounts = ", ".join(f"{login} ({account['role']})" for login, account in saved.items())
    code = f"print(pyotp.TOTP(json.load(open('{path}'))['demo.pharmacien']['totp_secret']).now())"
    print(
        f"\nWeb UI for professionals: {ui_url}  (password + TOTP code)\n"
        f"  demonstration accounts: {accounts}\n"
        f"  their passwords and TOTP secrets are in {path} (mode 0600), never printed; a current code:\n"
        f"  {sys.executable} -c \"import json, pyotp; {code}\"",
        flush=True,
    )
    return saved
