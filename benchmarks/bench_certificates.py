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
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

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
        raw = rate(lambda: signer.private_key.sign(message, algorithm), seconds)
        signed = rate(lambda: hcert.issue_hcert(payload, signer, now, expires), seconds)
        full = rate(lambda: issue_certificates(negative, keyring, now), seconds)
        print(f"raw ECDSA P-256 signatures/s (cryptography): {raw:10.0f}")
        print(f"HCERT signatures/s (validate + CWT + COSE + zlib + Base45): {signed:10.0f}"
              f"   ratio {signed / raw:.1%}")
        print(f"HCERT from facts/s (plan + UVCI + payload + validate + sign): {full:10.0f}"
              f"   ratio {full / raw:.1%}")

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
