"""Ingest and search figures for the FHIR core. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_ingest.py [--bundles 300] [--results 100000]

1. App-layer cost: CPU time of the web process alone (this process; the database runs in its own
   process) per ingested result — a transaction Bundle of Patient, ServiceRequest, Specimen,
   Observation, DiagnosticReport and the performing Organization, posted by a laboratory's OAuth2
   client (token check, SI-DEP profiles, audit included) — and the results/s per core it implies.
2. End to end on the embedded default: results/s through HTTP (gunicorn, 2 workers) beside the raw
   pymongo insert rate of the same documents into the same engine, and their ratio.
3. Read and search latency (p50/p95) with --results stored results: a patient's results, a dossier
   by identifier, results by code and date range.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processes import wait_until_up  # noqa: E402

from fhir_server import create_app  # noqa: E402
from fhir_server.embedded import free_port, start_mongo  # noqa: E402
from fhir_server.resources import SUPPORTED_TYPES  # noqa: E402
from fhir_server.search.extract import index_fields  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402
from fhir_server.storage import new_id  # noqa: E402
from fhir_server.storage.mongo import HISTORY  # noqa: E402

RESOURCE_COLLECTIONS = set(SUPPORTED_TYPES) - {"AuditEvent", "CodeSystem", "ValueSet"}
from fhir_server.synthetic.generator import default_laboratories, generate_result_bundle  # noqa: E402

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Prefer": "return=minimal"}
LAB = default_laboratories()[0]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bundles(count, seed):
    """Results of one laboratory (its client may only write for its own sites)."""
    rng = random.Random(seed)
    return [generate_result_bundle(rng, LAB) for _ in range(count)]


def register_lab_client(app) -> tuple[str, str]:
    """(client_id, secret) of an OAuth2 client of LAB, in the app's database."""
    doc, secret = app.extensions["sidep.accounts"].register_client(
        "bench LIS",
        LAB.finess,
        [site.finess for site in LAB.sites],
        "system/*.read system/*.write",
        organisation_name=LAB.name,
    )
    return doc["_id"], secret


def bearer(post_token, client_id, secret) -> dict:
    response = post_token({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return {**HEADERS, "Authorization": f"Bearer {response['access_token']}"}


def app_layer_cpu(uri, count):
    settings = Settings(mongodb_uri=uri, mongodb_db="bench_cpu", base_url="http://bench/fhir", token_lifetime=3600)
    app = create_app(settings)
    client = app.test_client()
    headers = bearer(lambda form: client.post("/oauth/token", data=form).get_json(), *register_lab_client(app))
    data = [orjson.dumps(b) for b in bundles(count + 20, 1)]
    for body in data[:20]:  # warm-up: imports, caches, connection pool
        response = client.post("/fhir", data=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for body in data[20:]:
        response = client.post("/fhir", data=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    per_result_ms = cpu / count * 1000
    print(
        f"[app-layer] {count} result bundles: {per_result_ms:.2f} ms CPU per result in the web process "
        f"=> {1000 / per_result_ms:.0f} results/s per core (aim: <= 2 ms, >= 500/s); "
        f"wall {count / wall:.0f} results/s in-process with the embedded DB"
    )
    return app


def stored_documents(uri, db_name):
    """The documents the server wrote for its results, to replay them with raw pymongo."""
    from pymongo import MongoClient

    db = MongoClient(uri)[db_name]
    docs = {}
    for name in db.list_collection_names():
        if name in RESOURCE_COLLECTIONS or name == HISTORY:
            docs[name] = list(db[name].find())
    return docs


def http_end_to_end(uri, count):
    port = free_port()
    settings = Settings(mongodb_uri=uri, mongodb_db="bench_http", base_url=f"http://127.0.0.1:{port}/fhir")
    credentials = register_lab_client(create_app(settings))  # also creates the indexes
    env = dict(
        os.environ,
        MONGODB_URI=uri,
        MONGODB_DB="bench_http",
        TOKEN_LIFETIME="3600",
        FHIR_BASE_URL=f"http://127.0.0.1:{port}/fhir",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_until_up(base, tries=100)
        data = [orjson.dumps(b) for b in bundles(count, 2)]
        session = requests.Session()
        token_url = f"http://127.0.0.1:{port}/oauth/token"
        headers = bearer(lambda form: session.post(token_url, data=form).json(), *credentials)

        def post(body):
            response = session.post(base, data=body, headers=headers)
            assert response.status_code == 200, response.text[:300]

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(post, data))
        http_rate = count / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait()
    from pymongo import MongoClient

    docs = stored_documents(uri, "bench_http")
    raw = MongoClient(uri)["bench_raw"]
    total = sum(len(v) for v in docs.values())
    start = time.perf_counter()
    for name, items in docs.items():
        for doc in items:
            raw[name].insert_one(doc)
    raw_seconds = time.perf_counter() - start
    raw_rate = count / raw_seconds
    print(
        f"[end-to-end] HTTP: {http_rate:.1f} results/s (gunicorn 2 workers x 4 threads, 4 client threads); "
        f"raw pymongo insert_one of the same {total} documents: {raw_rate:.1f} results/s "
        f"({total / raw_seconds:.0f} docs/s); HTTP/raw ratio {http_rate / raw_rate:.2f}"
    )


def bulk_load(uri, results):
    """Stores `results` Observations with their Patient and ServiceRequest, written as the server
    writes them (same index fields), straight through pymongo."""
    settings = Settings(mongodb_uri=uri, mongodb_db="bench_search", base_url="http://bench/fhir", token_lifetime=3600)
    app = create_app(settings)  # creates the indexes
    db = app.extensions["sidep.store"].db
    rng = random.Random(3)
    now = datetime.now(UTC)
    patients = []
    batch: dict[str, list] = {"Patient": [], "ServiceRequest": [], "Observation": []}
    start = time.perf_counter()
    sample = {}
    for i in range(results):
        bundle = generate_result_bundle(rng, LAB, now=now, include_legal_entity=False)
        resources = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{new_id()}" for e in bundle["entry"]}
        # a fifth of the patients come back for another test
        if patients and rng.random() < 0.2:
            patient_key = rng.choice(patients)
        else:
            patient_key = ids[next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")]
            patients.append(patient_key)
            batch["Patient"].append(_doc("Patient", patient_key, resources["Patient"], ids))
        for e in bundle["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                ids[e["fullUrl"]] = patient_key
        for rtype in ("ServiceRequest", "Observation"):
            batch[rtype].append(
                _doc(
                    rtype,
                    ids[next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)],
                    resources[rtype],
                    ids,
                )
            )
        if i == results // 2:
            sample = {
                "patient": patient_key,
                "dossier": resources["ServiceRequest"]["identifier"][0],
                "code": resources["Observation"]["code"]["coding"][0],
            }
        if len(batch["Observation"]) >= 2000 or i == results - 1:
            for rtype, docs in batch.items():
                if docs:
                    db[rtype].insert_many(docs, ordered=False)
                batch[rtype] = []
    print(f"[load] {results} results ({len(patients)} patients) stored in {time.perf_counter() - start:.0f} s")
    return app, sample


def _doc(rtype, key, resource, ids):
    resource = orjson.loads(orjson.dumps(resource))
    for element in ("subject", "specimen"):
        if isinstance(resource.get(element), dict) and resource[element].get("reference") in ids:
            resource[element]["reference"] = ids[resource[element]["reference"]]
    for element in ("basedOn", "performer"):
        for ref in resource.get(element, []):
            ref["reference"] = ids.get(ref.get("reference"), ref.get("reference"))
    rid = key.split("/")[1]
    resource.update(id=rid, meta={"versionId": "1", "lastUpdated": "2026-11-01T00:00:00.000Z"})
    return {
        "_id": rid,
        "v": 1,
        "ts": datetime(2026, 11, 1),
        "del": False,
        "res": resource,
        "org": [LAB.finess],
        **index_fields(rtype, resource, "http://bench/fhir"),
    }


def search_latency(app, sample, repeat):
    """As the laboratory's client would search (its organisation filter applies)."""
    test_client = app.test_client()
    headers = bearer(lambda form: test_client.post("/oauth/token", data=form).get_json(), *register_lab_client(app))

    class client:  # noqa: N801  (the test client with the bearer token)
        get = staticmethod(lambda url: test_client.get(url, headers=headers))

    dossier = sample["dossier"]
    code = sample["code"]
    since = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%d")
    until = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    first = client.get(f"/fhir/Observation?patient={sample['patient']}").get_json()
    observation_id = first["entry"][0]["resource"]["id"]
    queries = {
        "read Observation/id": f"/fhir/Observation/{observation_id}",
        "a patient's results": f"/fhir/Observation?patient={sample['patient']}&_sort=-date",
        "a dossier by identifier": f"/fhir/ServiceRequest?identifier={dossier['system']}|{dossier['value']}",
        "results by code and date range": (
            f"/fhir/Observation?code={code['system']}|{code['code']}"
            f"&date=ge{since}&date=lt{until}&_sort=-date&_count=50"
        ),
    }
    for label, url in queries.items():
        timings = []
        for _ in range(repeat):
            start = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)[:300]
        body = response.get_json()
        matched = len(body.get("entry", [])) if body.get("resourceType") == "Bundle" else 1
        print(
            f"[search] {label:32s} p50 {percentile(timings, 50):7.1f} ms   p95 {percentile(timings, 95):7.1f} ms"
            f"   ({matched} entries on the page)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=int, default=300)
    parser.add_argument("--http-bundles", type=int, default=200)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cpu", "http", "search"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp) / "db")
        try:
            if "cpu" not in args.skip:
                app_layer_cpu(mongo.uri, args.bundles)
            if "http" not in args.skip:
                http_end_to_end(mongo.uri, args.http_bundles)
            if "search" not in args.skip:
                app, sample = bulk_load(mongo.uri, args.results)
                search_latency(app, sample, args.repeat)
                app.extensions["sidep.audit"].flush()  # before the database stops
        finally:
            mongo.stop()


if __name__ == "__main__":
    main()
