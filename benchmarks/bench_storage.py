"""Storage footprint per result: documents and indexes in each collection after N result
Bundles of one laboratory, posted over HTTP by its OAuth2 client (profiles and indexes on).
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_storage.py [--results 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
from pathlib import Path

import requests
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server import create_app  # noqa: E402
from fhir_server.embedded import free_port, start_mongo  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=int, default=200)
    count = parser.parse_args().results
    mongo = start_mongo(tempfile.mkdtemp())
    port = free_port()
    config = Settings(
        mongodb_uri=mongo.uri,
        mongodb_db="footprint",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=tempfile.mkdtemp(),
        audit_enabled=False,
    )
    app = create_app(config)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lab = make_laboratories(random.Random(7), 1)[0]
        client, secret = app.extensions["sidep.accounts"].register_client(
            "LIS",
            lab.finess,
            [s.finess for s in lab.sites],
            "system/*.read system/*.write",
            "laboratory",
            None,
            lab.name,
        )
        token = requests.post(
            config.token_endpoint,
            timeout=30,
            data={"grant_type": "client_credentials", "client_id": client["_id"], "client_secret": secret},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        rng = random.Random(1)
        for _ in range(count):
            bundle = generate_result_bundle(rng, lab, include_legal_entity=False)
            response = requests.post(config.base_url, json=bundle, headers=headers, timeout=60)
            response.raise_for_status()
        report(app.extensions["sidep.store"].db, count)
    finally:
        server.shutdown()
        mongo.stop()


def report(db, count: int) -> None:
    documents = indexes = 0
    for name in sorted(db.list_collection_names()):
        n = db[name].count_documents({})
        index_count = len(db[name].index_information())
        indexes += index_count
        if n:
            documents += n
            print(f"{name:18} {n:7} documents ({n / count:5.2f} per result)  {index_count:3} indexes")
    print(f"in all: {documents / count:.2f} documents per result, {indexes} indexes")


if __name__ == "__main__":
    main()
