"""Certificate figures on one core: HCERT signatures/s against raw ECDSA P-256 signatures/s in the
same run (and their ratio), QR PNG/s, PDF/s with p50/p95 latency of the whole PDF generation (from
the layout, names changing at every certificate; and drawn whole by xhtml2pdf, as without layouts),
and what a layout's first use costs.

    .venv/bin/python benchmarks/bench_certificates.py [--seconds 3] [--runs 5] [--http]

Prints figures (and, with --runs, the median of the runs against the aims); asserts nothing.
Single-threaded: every figure is for one core. Development keys go to a temporary directory.
With --http, also the PDF over HTTP: `$generate-certificate` of a laboratory's results from one
gunicorn worker process (4 threads) on SecantusDB, 4 client threads, for --seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from processes import wait_until_up  # noqa: E402

from operations.certificates import hcert  # noqa: E402
from operations.certificates.examples import example_resources  # noqa: E402
from operations.certificates.facts import facts_from_resources  # noqa: E402
from operations.certificates.generate import issue_certificates  # noqa: E402
from operations.certificates.keys import load_keyring  # noqa: E402
from operations.certificates.pdf import certificate_layouts, layout_pdf, render_pdf, whole_pdf  # noqa: E402
from operations.certificates.qr import qr_png  # noqa: E402

# who the certificates are for: one after the other, so that no two in a row are alike (letters
# outside the fonts' subsets among them)
NAMES = [
    ("Lefèvre-Dubois", ("Françoise-Hélène",)),
    ("Martin", ("Jean", "Pierre")),
    ("Wąsowski", ("Łukasz",)),
    ("Nguyen", ("Thi Thu",)),
    ("Ödön", ("Gergő",)),
    ("Şahin", ("Ağça",)),
    ("Žižková", ("Anežka", "Říhová")),
    ("N'Diaye-Œuvray", ("Aïssatou",)),
    ("García Márquez", ("José Ángel",)),
    ("Dupont", ("Marie",)),
    ("Øster", ("Søren",)),
    ("Bernard", ("Chloé",)),
]


def rate(work, seconds: float) -> float:
    """Calls per second of `work` over about `seconds` (after a short warm-up)."""
    for _ in range(20):
        work()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            work()
        count += 50
    return count / elapsed


def interleaved_rates(works: dict, seconds: float, rounds: int = 8) -> dict[str, list[float]]:
    """Rates measured in alternating short rounds, so that a change of machine load during the
    run weighs on every contender alike; ratios are taken round by round."""
    rates = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            rates[name].append(rate(work, seconds / rounds))
    return rates


def latencies(work, seconds: float) -> list[float]:
    work()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 20:
        begin = time.perf_counter()
        work()
        times.append(time.perf_counter() - begin)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(seconds: float, keyring, now: dt.datetime) -> dict[str, float]:
    """One run of every figure; prints them as it goes."""
    signer = keyring.current_signer()
    negative = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=8)))
    payload = issue_certificates(negative, keyring, now).dccs[0].payload
    expires = now + dt.timedelta(hours=72)
    figures = {}

    # The raw signing work of one HCERT: ~370 bytes of COSE Sig_structure. HCERT signatures are
    # randomised (ECDSA), so every round compresses and encodes a new message, as in production.
    message = os.urandom(370)
    algorithm = ec.ECDSA(hashes.SHA256())
    rates = interleaved_rates(
        {
            "raw": lambda: signer.private_key.sign(message, algorithm),
            "sign": lambda: hcert.sign_hcert(payload, signer, now, expires),
            "validate+sign": lambda: hcert.issue_hcert(payload, signer, now, expires),
            "from facts": lambda: issue_certificates(negative, keyring, now),
        },
        2 * seconds,
    )
    raw = figures["raw ECDSA/s"] = statistics.median(rates["raw"])
    print(f"raw ECDSA P-256 signatures/s (cryptography): {raw:10.0f}")
    for name, label in (
        ("sign", "CWT + COSE + zlib + Base45"),
        ("validate+sign", "schema/value-set validation + the above"),
        ("from facts", "plan + UVCI + payload + validation + signing"),
    ):
        ratio = statistics.median([r / b for r, b in zip(rates[name], rates["raw"], strict=True)])
        figures[f"HCERT/s {name}"] = statistics.median(rates[name])
        figures[f"ratio {name}"] = ratio
        print(f"HCERT/s, {label}: {figures[f'HCERT/s {name}']:10.0f}   ratio to raw ECDSA {ratio:.1%}")

    # Distinct HC1 strings, more than qr.py caches matrices for: every QR is made from scratch.
    hc1s = itertools.cycle([issue_certificates(negative, keyring, now).dccs[0].hc1 for _ in range(64)])
    figures["QR/s"] = rate(lambda: qr_png(next(hc1s)), seconds)
    print(f"QR PNG/s (level Q, ~{len(next(hc1s))} characters): {figures['QR/s']:8.1f}")

    for key, label, options in (
        ("negative", "negative, 2 pages", dict(sampled_at=now - dt.timedelta(hours=8))),
        ("positive", "positive + recovery, 3 pages", dict(result="detected", sampled_at=now - dt.timedelta(days=20))),
    ):
        people = itertools.cycle(
            facts_from_resources(
                **example_resources(
                    family=family, given=given, birth_date=f"19{50 + n}-0{1 + n % 9}-1{n % 10}", **options
                )
            )
            for n, (family, given) in enumerate(NAMES)
        )
        # The whole operation for one request: sign the DCC(s), make the QR(s), draw the PDF.
        times = latencies(lambda: render_pdf(issue_certificates(next(people), keyring, now)), seconds)
        size = len(render_pdf(issue_certificates(next(people), keyring, now)))
        report_pdf(figures, key, f"{label}, {size} bytes, from its layout", times)

    whole = latencies(lambda: whole_pdf(issue_certificates(negative, keyring, now)), seconds / 2)
    report_pdf(figures, "whole", "negative, drawn whole by xhtml2pdf", whole)

    certificates = issue_certificates(negative, keyring, now)
    begin = time.perf_counter()
    layout_pdf(certificates, certificate_layouts())
    figures["layout first use ms"] = (time.perf_counter() - begin) * 1000
    print(f"a layout's first use in a process (two xhtml2pdf drawings, read): {figures['layout first use ms']:.0f} ms")
    return figures


def report_pdf(figures: dict, key: str, label: str, times: list[float]) -> None:
    figures[f"PDF/s {key}"] = len(times) / sum(times)
    figures[f"PDF p50 ms {key}"] = statistics.median(times) * 1000
    figures[f"PDF p95 ms {key}"] = percentile(times, 0.95) * 1000
    print(
        f"PDF ({label}): {figures[f'PDF/s {key}']:6.1f}/s   p50 {figures[f'PDF p50 ms {key}']:6.1f} ms   "
        f"p95 {figures[f'PDF p95 ms {key}']:6.1f} ms   (whole generation: sign + QR + PDF)"
    )


def over_http(seconds: float, clients: int = 4, results: int = 24) -> None:
    """PDF/s and latency of `$generate-certificate` from one gunicorn worker process."""
    import random
    import subprocess
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from benchmarks.bench_ingest import LAB, bearer, register_lab_client
    from fhir_server import create_app
    from fhir_server.embedded import free_port, start_mongo, start_redis
    from fhir_server.settings import Settings, process_environment
    from fhir_server.synthetic.generator import generate_result_bundle

    with tempfile.TemporaryDirectory() as tmp:
        mongo, redis = start_mongo(Path(tmp) / "db"), start_redis(Path(tmp) / "redis")
        port = free_port()
        settings = Settings(
            mongodb_uri=mongo.uri,
            mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
            redis_url=redis.url,
            base_url=f"http://127.0.0.1:{port}/fhir",
            var_dir=str(Path(tmp) / "var"),
        ).but(token_lifetime=3600)
        credentials = register_lab_client(create_app(settings))
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        server = subprocess.Popen(
            [*command, "--threads", str(clients), "wsgi:app"],
            cwd=str(Path(__file__).resolve().parents[1]),
            env=process_environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(settings.base_url)
            session = requests.Session()
            token_url = f"http://127.0.0.1:{port}/oauth/token"
            headers = bearer(lambda form: session.post(token_url, data=form, timeout=30).json(), *credentials)
            rng, reports = random.Random(7), []
            for _ in range(results):
                bundle = generate_result_bundle(rng, LAB, kind="naat")
                answer = session.post(settings.base_url, json=bundle, headers=headers, timeout=60).json()
                locations = [e["response"]["location"] for e in answer["entry"]]
                reports += [loc.split("/")[1] for loc in locations if loc.startswith("DiagnosticReport/")]
            headers = {**headers, "Accept": "application/pdf"}
            urls = itertools.cycle(f"{settings.base_url}/DiagnosticReport/{r}/$generate-certificate" for r in reports)
            for url in itertools.islice(urls, len(reports)):  # every layout drawn once before timing
                assert session.get(url, headers=headers, timeout=60).status_code == 200
            times: list[float] = []

            def client() -> None:
                own = requests.Session()
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    begin = time.perf_counter()
                    response = own.get(next(urls), headers=headers, timeout=60)
                    assert response.status_code == 200 and response.content.startswith(b"%PDF"), response.text[:300]
                    times.append(time.perf_counter() - begin)

            begin = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda _: client(), range(clients)))
            elapsed = time.perf_counter() - begin
            print(
                f"PDF over HTTP (1 gunicorn worker x {clients} threads, {clients} clients): "
                f"{len(times) / elapsed:.1f}/s   p50 {statistics.median(times) * 1000:.1f} ms   "
                f"p95 {percentile(times, 0.95) * 1000:.1f} ms"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
            redis.stop()
            mongo.stop()


AIMS = (
    ("ratio validate+sign", "HCERT incl. validation / raw ECDSA", 0.30, "{:.1%}"),
    ("QR/s", "QR PNG/s", 150, "{:.0f}"),
    ("PDF/s negative", "PDF/s (negative)", 100, "{:.1f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the whole measurement; medians of the runs are printed"
    )
    parser.add_argument("--http", action="store_true", help="also the PDF over HTTP, from one server process")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as var_dir:
        keyring = load_keyring(var_dir, environ={})
        now = dt.datetime.now(dt.UTC)
        runs = []
        for run in range(options.runs):
            if options.runs > 1:
                print(f"--- run {run + 1}/{options.runs}")
            runs.append(measure(options.seconds, keyring, now))
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"--- median of {len(runs)} run(s), against the aims for certificates (one core)")
    for key, label, aim, form in AIMS:
        verdict = "met" if medians[key] >= aim else "NOT met"
        print(f"{label}: {form.format(medians[key])} (aim >= {form.format(aim)}) {verdict}")
    p95 = medians["PDF p95 ms negative"]
    print(f"PDF p95 latency (negative): {p95:.1f} ms (aim < 50 ms) {'met' if p95 < 50 else 'NOT met'}")
    if options.http:
        over_http(options.seconds)


if __name__ == "__main__":
    main()
