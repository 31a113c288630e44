"""python -m fhir_server.synthetic --count N [--seed S] [--out file.ndjson]: result Bundles as NDJSON."""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime

from .generator import generate_bundles, make_laboratories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fhir_server.synthetic", description="Print synthetic SI-DEP transaction Bundles, one per line."
    )
    parser.add_argument("--count", type=int, required=True, help="number of bundles")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed and --now: same output)")
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.add_argument("--now", help="reference instant, ISO 8601 (default: now); samples fall in the 3 months before")
    parser.add_argument(
        "--labs", type=int, default=0, help="draw N laboratories from the seed (default: the fixed set of 20)"
    )
    parser.add_argument("--positive-rate", type=float, default=0.10)
    parser.add_argument(
        "--resend-rate", type=float, default=0.0, help="share of bundles that retransmit an earlier dossier"
    )
    parser.add_argument(
        "--repeat-patient-rate", type=float, default=0.0, help="share of new dossiers for an earlier patient"
    )
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    labs = make_laboratories(random.Random(args.seed), args.labs) if args.labs else None
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for bundle in generate_bundles(
            rng,
            args.count,
            now=now,
            labs=labs,
            resend_rate=args.resend_rate,
            repeat_patient_rate=args.repeat_patient_rate,
            positive_rate=args.positive_rate,
        ):
            out.write(json.dumps(bundle, ensure_ascii=False, separators=(",", ":")) + "\n")
    except BrokenPipeError:  # `| head`: the reader has had enough
        sys.stderr.close()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
