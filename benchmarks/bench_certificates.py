"""Certificate figures on one core: HCERT signatures/s against raw ECDSA P-256 signatures/s in the
same run (and their ratio), QR PNG/s, PDF/s with p50/p95 latency of the whole PDF generation.

    .venv/bin/python benchmarks/bench_certificates.py [--seconds 3] [--runs 5]

Prints figures (and, with --runs, the median of the runs against the aims); asserts nothing.
Single-threaded: every figure is for one core. Development keys go to a temporary directory.
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

from operations.certificates import hcert  # noqa: E402
from operations.certificates.examples import example_resources  # noqa: E402
from operations.certificates.facts import facts_from_resources  # noqa: E402
from operations.certificates.generate import issue_certificates  # noqa: E402
from operations.certificates.keys import load_keyring  # noqa: E402
from operations.certificates.pdf import render_pdf  # noqa: E402
from operations.certificates.qr import qr_png  # noqa: E402


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
    positive = facts_from_resources(**example_resources(result="detected", sampled_at=now - dt.timedelta(days=20)))
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

    for key, label, facts in (
        ("negative", "negative, 2 pages", negative),
        ("positive", "positive + recovery, 3 pages", positive),
    ):
        # The whole operation for one request: sign the DCC(s), make the QR(s), draw the PDF.
        times = latencies(lambda: render_pdf(issue_certificates(facts, keyring, now)), seconds)
        size = len(render_pdf(issue_certificates(facts, keyring, now)))
        figures[f"PDF/s {key}"] = len(times) / sum(times)
        figures[f"PDF p50 ms {key}"] = statistics.median(times) * 1000
        figures[f"PDF p95 ms {key}"] = percentile(times, 0.95) * 1000
        print(
            f"PDF ({label}, {size} bytes): {figures[f'PDF/s {key}']:6.1f}/s   "
            f"p50 {figures[f'PDF p50 ms {key}']:6.1f} ms   "
            f"p95 {figures[f'PDF p95 ms {key}']:6.1f} ms   (whole generation: "
            f"sign + QR + PDF)"
        )
    return figures


AIMS = (
    ("ratio validate+sign", "HCERT incl. validation / raw ECDSA", 0.30, "{:.1%}"),
    ("QR/s", "QR PNG/s", 150, "{:.0f}"),
    ("PDF/s negative", "PDF/s (negative)", 20, "{:.1f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the whole measurement; medians of the runs are printed"
    )
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
    print(f"PDF p95 latency (negative): {p95:.1f} ms (aim < 150 ms) {'met' if p95 < 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
