"""Certificate figures on one core: HCERT signatures/s against raw ECDSA P-256 signatures/s in the
same run (and their ratio), QR PNG/s, PDF/s with p50/p95 latency of the whole PDF generation.

    .venv/bin/python benchmarks/bench_certificates.py [--seconds 3]

Prints figures; asserts nothing. Development keys go to a temporary directory.
"""
from __future__ import annotations

import argparse
import datetime as dt
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    seconds = parser.parse_args().seconds

    with tempfile.TemporaryDirectory() as var_dir:
        keyring = load_keyring(var_dir, environ={})
        signer = keyring.current_signer()
        now = dt.datetime.now(dt.timezone.utc)
        negative = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=8)))
        positive = facts_from_resources(**example_resources(
            result="detected", sampled_at=now - dt.timedelta(days=20)))
        certificates = issue_certificates(negative, keyring, now)
        payload = certificates.dccs[0].payload
        expires = now + dt.timedelta(hours=72)

        # The raw signing work of one HCERT: ~330 bytes of COSE Sig_structure.
        message = os.urandom(330)
        algorithm = ec.ECDSA(hashes.SHA256())
        rates = interleaved_rates({
            "raw": lambda: signer.private_key.sign(message, algorithm),
            "sign": lambda: hcert.sign_hcert(payload, signer, now, expires),
            "validate+sign": lambda: hcert.issue_hcert(payload, signer, now, expires),
            "from facts": lambda: issue_certificates(negative, keyring, now),
        }, 2 * seconds)
        raw = statistics.median(rates["raw"])
        print(f"raw ECDSA P-256 signatures/s (cryptography): {raw:10.0f}")
        for name, label in (("sign", "CWT + COSE + zlib + Base45"),
                            ("validate+sign", "schema/value-set validation + the above"),
                            ("from facts", "plan + UVCI + payload + validation + signing")):
            ratios = [r / b for r, b in zip(rates[name], rates["raw"])]
            print(f"HCERT/s, {label}: {statistics.median(rates[name]):10.0f}"
                  f"   ratio to raw ECDSA {statistics.median(ratios):.1%}")

        hc1 = certificates.dccs[0].hc1
        print(f"QR PNG/s (level Q, {len(hc1)} characters): {rate(lambda: qr_png(hc1), seconds):8.1f}")

        for label, facts in (("negative, 2 pages", negative), ("positive + recovery, 3 pages", positive)):
            times = latencies(lambda: render_pdf(issue_certificates(facts, keyring, now)), seconds)
            size = len(render_pdf(issue_certificates(facts, keyring, now)))
            print(f"PDF ({label}, {size} bytes): {len(times) / sum(times):6.1f}/s   "
                  f"p50 {statistics.median(times) * 1000:6.1f} ms   "
                  f"p95 {percentile(times, 0.95) * 1000:6.1f} ms   (whole generation: "
                  f"sign + QR + PDF)")


if __name__ == "__main__":
    main()
