"""Load on the running platform, from outside, over HTTP: N concurrent laboratory clients posting
the synthetic generator's result Bundles (one dossier each, several laboratories), as LIS do.

    make run                                       # in another terminal: the embedded default
    .venv/bin/python benchmarks/bench_load.py [--clients 1 4 16] [--results 400] [--labs 4]

Prints, per number of clients: results/s, p50/p95/p99 of a Bundle's answer, errors, the CPU
each process of the platform spent per result (web: gunicorn; database: the MongoDB-protocol
server, found by its serverStatus pid; workers and dispatcher), and the database work per
result (serverStatus opcounters: inserts, queries, updates, commands). Nothing is mocked and
nothing is asserted: figures to compare before and after a change.

Beside each run, its raw baseline: the documents the platform wrote for those results (each
result's resources with their conditional keys, their history, its change-log entry, outbox
events, person record, and its AuditEvent), read back and written again with pymongo alone into a
scratch database with the same indexes, in the same transactions (one per result), by as many
concurrent clients: what the database takes for the same writes with no FHIR server in front.
It reads nothing; the platform's transaction also reads (its conditional lookups).

It registers one OAuth2 client per synthetic laboratory in the platform's database
(MONGODB_URI, else the embedded one's VAR_DIR/mongodb.uri) and gets their tokens from the
platform. Patients get a mobile number, so the notification pipeline works as on a real day.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import requests
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.resources import SUPPORTED_TYPES  # noqa: E402
from fhir_server.storage.accounts import Accounts  # noqa: E402
from fhir_server.storage.mongo import CHANGES, HISTORY, OUTBOX, PERSONS  # noqa: E402
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FHIR_JSON = "application/fhir+json"
# what each of the platform's processes is, from its command line
ROLES: dict[str, Callable[[str], bool]] = {
    "web": lambda line: "gunicorn" in line,
    "workers": lambda line: "-m workers" in line and "dispatcher" not in line or "rq worker" in line,
    "dispatcher": lambda line: "workers.dispatcher" in line,
}


def database_uri() -> str:
    if os.environ.get("MONGODB_URI"):
        return os.environ["MONGODB_URI"]
    kept = ROOT / os.environ.get("VAR_DIR", "var") / "mongodb.uri"
    if not kept.exists():
        raise SystemExit(f"no MONGODB_URI and no {kept}: start the platform first (make run)")
    return kept.read_text().strip()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:13]) / CLOCK_TICKS


def platform_processes(database_pid: int) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {role: [] for role in ROLES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for role, matches in ROLES.items():
            if matches(line):
                found[role].append(int(entry.name))
                break
    found["database"] = [database_pid]
    return found


def cpu_by_role(processes: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in processes.items()}


def opcounters(client: MongoClient) -> dict[str, int]:
    counters = client.admin.command("serverStatus")["opcounters"]
    return {name: int(counters.get(name, 0)) for name in ("insert", "query", "update", "command")}


def lab_sessions(base: str, db, labs) -> list[requests.Session]:
    sessions = []
    accounts = Accounts(db)
    for lab in labs:
        doc, secret = accounts.register_client(
            "bench load LIS",
            lab.finess,
            [s.finess for s in lab.sites],
            "system/*.read system/*.write",
            organisation_name=lab.name,
        )
        token = requests.post(
            base.rsplit("/fhir", 1)[0] + "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": doc["_id"], "client_secret": secret},
            timeout=30,
        )
        token.raise_for_status()
        session = requests.Session()
        session.headers.update(
            {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Authorization": f"Bearer {token.json()['access_token']}"}
        )
        sessions.append(session)
    return sessions


def bundles(labs, count: int, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    made = []
    for n in range(count):
        index = n % len(labs)
        person = make_person(rng, date(2026, 11, 30))
        person = dataclasses.replace(person, phone=f"+3361{seed % 100:02d}{n:05d}", email=None)
        bundle = generate_result_bundle(rng, labs[index], person=person, include_legal_entity=False)
        made.append((index, orjson.dumps(bundle)))
    return made


def run(base: str, sessions, work, clients: int) -> dict:
    latencies: list[float] = []
    errors: Counter[str] = Counter()  # what went wrong -> how often
    lock = threading.Lock()

    def post(item):
        index, body = item
        started = time.perf_counter()
        try:
            response = sessions[index].post(base, data=body, timeout=120)
            failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            failure = type(exc).__name__
        with lock:
            latencies.append(time.perf_counter() - started)
            if failure:
                errors[failure] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, work))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def percentile(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

    return {
        "rate": len(work) / elapsed,
        "p50": statistics.median(ordered),
        "p95": percentile(0.95),
        "p99": percentile(0.99),
        "errors": errors,
    }


def units_written(db, since) -> list[dict]:
    """The documents of each result the platform took since `since`: one unit of work per result
    Bundle (its change-log entry creates a DiagnosticReport), as {collection: [documents]}."""
    units = []
    for entry in db[CHANGES].find({"ts": {"$gte": since}}):
        written = [(rtype, rid, version) for rtype, rid, version, _deleted in entry["w"]]
        if not any(rtype == "DiagnosticReport" and version == 1 for rtype, _, version in written):
            continue  # a notification's Communication, not a result
        unit: dict[str, list[dict]] = {}
        for rtype, rid, _version in written:
            unit.setdefault(rtype, []).extend(db[rtype].find({"_id": rid}))
        unit[HISTORY] = list(db[HISTORY].find({"_id": {"$in": [f"{t}/{i}/{v}" for t, i, v in written]}}))
        unit[CHANGES] = [{k: v for k, v in entry.items() if k != "seq"} | {"pending": True}]
        reports = [f"DiagnosticReport/{rid}" for rtype, rid, _ in written if rtype == "DiagnosticReport"]
        unit[OUTBOX] = list(db[OUTBOX].find({"key": {"$in": reports}, "ts": entry["ts"]}))
        patients = [f"Patient/{rid}" for rtype, rid, _ in written if rtype == "Patient"]
        unit[PERSONS] = list(db[PERSONS].find({"links.patient": {"$in": patients}})) if patients else []
        units.append(unit)
    return units


def raw_database(client: MongoClient, db, name: str):
    """A scratch database with the platform's collections and indexes, empty."""
    client.drop_database(name)
    raw = client[name]
    for collection in (*SUPPORTED_TYPES, HISTORY, CHANGES, OUTBOX, PERSONS):
        for index_name, spec in db[collection].index_information().items():
            if index_name == "_id_":
                continue
            options = {k: v for k, v in spec.items() if k in ("unique", "sparse", "partialFilterExpression")}
            raw[collection].create_index(spec["key"], name=index_name, **options)
    return raw


def settle(database_pid: int, longest: float = 120.0) -> None:
    """Wait for the platform to finish the run's notifications (the database idle for a second),
    so that the baseline does not share the database with them."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = cpu_seconds(database_pid)
        time.sleep(1.0)
        if cpu_seconds(database_pid) - before < 0.15:
            return


def replay(client: MongoClient, raw, units: list[dict], audits: list[dict], clients: int) -> float:
    """Write the units again, one transaction each as the platform does (one insert per collection),
    then each one's AuditEvent outside it; returns results/s."""

    def write(index: int) -> None:
        with client.start_session() as session:
            session.with_transaction(lambda session: write_unit(units[index], session))  # retried on conflicts
        if index < len(audits):
            raw["AuditEvent"].insert_one(audits[index])

    def write_unit(unit: dict, session) -> None:
        for collection, docs in unit.items():
            if not docs:
                continue
            if collection in (PERSONS, "Organization"):  # shared by several results: written again
                for doc in docs:
                    raw[collection].replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)
            else:
                raw[collection].insert_many(docs, session=session)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(write, range(len(units))))
    return len(units) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080/fhir")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--results", type=int, default=400, help="results posted per run")
    parser.add_argument("--labs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()), help="new dossiers unless repeated")
    args = parser.parse_args()
    client = MongoClient(database_uri())
    db = client[os.environ.get("MONGODB_DB", "sidep")]
    status = client.admin.command("serverStatus")
    labs = make_laboratories(random.Random(2026), args.labs)
    sessions = lab_sessions(args.url, db, labs)
    processes = platform_processes(int(status["pid"]))
    roles = ("web", "database", "workers", "dispatcher")
    print(f"processes: {', '.join(f'{role} {len(processes[role])}' for role in roles)}")
    header = ("clients", "results/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    header += tuple(f"{role} ms" for role in roles) + ("ins", "query", "upd", "cmd", "raw r/s", "raw db ms")
    print(" ".join(f"{h:>9}" for h in header), flush=True)
    for seed, clients in enumerate(args.clients, start=args.seed * 100):
        work = bundles(labs, args.results, seed)
        cpu_before, ops_before = cpu_by_role(processes), opcounters(client)
        since = datetime.now(UTC).replace(tzinfo=None)
        row = run(args.url, sessions, work, clients)
        cpu_after, ops_after = cpu_by_role(processes), opcounters(client)
        units = units_written(db, since)
        audits = [
            {k: v for k, v in d.items()} for d in db["AuditEvent"].find({"ts": {"$gte": since}}).limit(len(units))
        ]
        settle(processes["database"][0])
        raw = raw_database(client, db, "bench_load_raw")
        database_before = cpu_seconds(processes["database"][0])
        raw_rate = replay(client, raw, units, audits, clients)
        raw_database_ms = 1000 * (cpu_seconds(processes["database"][0]) - database_before) / max(len(units), 1)
        client.drop_database("bench_load_raw")
        per_result = {role: 1000 * (cpu_after[role] - cpu_before[role]) / len(work) for role in roles}
        ops = {name: (ops_after[name] - ops_before[name]) / len(work) for name in ops_before}
        values = (clients, f"{row['rate']:.1f}", *(f"{1000 * row[p]:.0f}" for p in ("p50", "p95", "p99")))
        values += (sum(row["errors"].values()), *(f"{per_result[role]:.1f}" for role in roles))
        values += tuple(f"{ops[name]:.1f}" for name in ("insert", "query", "update", "command"))
        values += (f"{raw_rate:.1f}", f"{raw_database_ms:.1f}")
        print(" ".join(f"{v:>9}" for v in values), flush=True)
        if row["errors"]:
            print(
                "          errors:",
                ", ".join(f"{kind} x{count}" for kind, count in row["errors"].most_common()),
                flush=True,
            )


if __name__ == "__main__":
    main()
