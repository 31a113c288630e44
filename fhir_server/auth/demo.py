"""First start on the embedded default: a demonstration laboratory and its OAuth2 client, so that a
new user posts a result within minutes.

The laboratory is synthetic (the generator's first default laboratory, with its first site), its
credentials are kept in VAR_DIR/demo-client.json (mode 0600) and a ready-made result Bundle for it
in VAR_DIR/demo-bundle.json; start-up prints where they are and the commands that read the secret from
that file to get a token and post the Bundle, never the secret itself (nothing secret on the console,
which is often a log).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from ..storage.accounts import Accounts
from ..synthetic.generator import Laboratory, default_laboratories, generate_result_bundle
from .__main__ import DEFAULT_SCOPE, URI_FILE

CREDENTIALS = "demo-client.json"
BUNDLE = "demo-bundle.json"


def demo_laboratory() -> Laboratory:
    lab = default_laboratories()[0]
    return Laboratory(lab.finess, lab.name, lab.sites[:1])


def _private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)


def ensure_demo_client(mongodb_uri: str, db_name: str, var_dir: str | Path, base_url: str, token_url: str) -> dict:
    """The demonstration client's credentials, created on first start; prints how to use them."""
    var_dir = Path(var_dir)
    _private_write(var_dir / URI_FILE, mongodb_uri + "\n")  # for `python -m fhir_server.auth` meanwhile
    accounts = Accounts.connect(mongodb_uri, db_name)
    path = var_dir / CREDENTIALS
    credentials = json.loads(path.read_text()) if path.exists() else None
    known = credentials and accounts.client(credentials.get("client_id", ""))
    lab = demo_laboratory()
    if not (known and known.get("active")):
        doc, secret = accounts.register_client(
            f"Démonstration — {lab.name}",
            lab.finess,
            [s.finess for s in lab.sites],
            DEFAULT_SCOPE,
            organisation_name=lab.name,
        )
        credentials = {
            "client_id": doc["_id"],
            "client_secret": secret,
            "token_url": token_url,
            "fhir_base_url": base_url,
            "organisation": lab.finess,
            "sites": [s.finess for s in lab.sites],
            "scope": DEFAULT_SCOPE,
        }
        _private_write(path, json.dumps(credentials, indent=2, ensure_ascii=False) + "\n")
        _private_write(var_dir / BUNDLE, json.dumps(generate_result_bundle(random.Random(), lab), ensure_ascii=False))
        print(
            f"Demonstration laboratory {lab.name} (FINESS {lab.finess}, site {lab.sites[0].finess}) "
            f"and its OAuth2 client created; credentials in {path} (mode 0600)",
            flush=True,
        )
    print(instructions(credentials, var_dir, token_url, base_url), flush=True)
    return credentials


def instructions(credentials: dict, var_dir: Path, token_url: str, base_url: str) -> str:
    """How to post a first result: the commands read the secret from the file, never print it."""
    path = var_dir / CREDENTIALS
    return f"""
Post a first result as the demonstration laboratory (client {credentials["client_id"]}; its secret is in
{path}, mode 0600, and never printed):

  ID=$(python3 -c 'import json; print(json.load(open("{path}"))["client_id"])')
  SECRET=$(python3 -c 'import json; print(json.load(open("{path}"))["client_secret"])')
  TOKEN=$(curl -s -u "$ID:$SECRET" -d grant_type=client_credentials -d 'scope=system/*.read system/*.write' \\
      {token_url} | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \\
      --data-binary @{var_dir / BUNDLE} {base_url}
  curl -s -H "Authorization: Bearer $TOKEN" '{base_url}/DiagnosticReport?_include=DiagnosticReport:subject'

Tokens live a few minutes (TOKEN_LIFETIME); other clients: python -m fhir_server.auth clients --help
"""


def first_start(env: dict, var_dir: str | Path, base_url: str) -> None:
    """Called by the run command on the embedded default: the demonstration client, unless auth is off."""
    if env.get("AUTH_ENABLED", "true").strip().lower() in {"0", "false", "no", "off"}:
        return
    from ..settings import Settings

    token_url = Settings(base_url=base_url, token_url=env.get("OAUTH_TOKEN_URL") or None).token_endpoint
    try:
        ensure_demo_client(env["MONGODB_URI"], env.get("MONGODB_DB", "sidep"), var_dir, base_url, token_url)
    except Exception as exc:  # noqa: BLE001 - the platform runs without its demonstration client
        print(f"(no demonstration client: {exc})", flush=True)
    try:  # a MSSanté directory in which the demonstration site has a stamped mailbox
        ensure_demo_mailbox(env["MONGODB_URI"], env.get("MONGODB_DB", "sidep"), Path(var_dir))
    except Exception as exc:  # noqa: BLE001 - certificates of unreachable patients then fail to route
        print(f"(no demonstration MSSanté directory: {exc})", flush=True)
    try:  # and a pharmacist and an operator for the web UI (fhir_server/web/demo.py)
        from ..storage.users import Users
        from ..web.demo import ensure_demo_users

        ensure_demo_users(
            Users.connect(env["MONGODB_URI"], env.get("MONGODB_DB", "sidep")),
            var_dir,
            base_url.rsplit("/fhir", 1)[0] + "/ui/",
        )
    except Exception as exc:  # noqa: BLE001 - the platform runs without its demonstration users
        print(f"(no demonstration users: {exc})", flush=True)


def ensure_demo_mailbox(mongodb_uri: str, db_name: str, var_dir: Path) -> None:
    """When no MSSanté directory is loaded: a synthetic extract (var/mssante-demo.txt) giving the
    demonstration site a mailbox stamped @SIDEP, so that the certificate of a patient without
    mobile or e-mail reaches the embedded SMTP server as it would the laboratory's mailbox."""
    from ..mssante import parse_extract
    from ..storage import mailboxes
    from ..synthetic.mssante import site_mailbox, write_extract

    directory = mailboxes.connect(mongodb_uri, db_name)
    if directory.current_version():
        return
    site = demo_laboratory().sites[0]
    path = var_dir / "mssante-demo.txt"
    write_extract(path, [site_mailbox(site)])
    directory.load(parse_extract(path))
    print(
        f"MSSanté directory (demonstration): {path}, loaded; replace it with the ANS extract: "
        "python -m fhir_server mailboxes load FILE",
        flush=True,
    )
