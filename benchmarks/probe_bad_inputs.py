"""Probe every bad input of ``tests/bad_inputs.py`` and count how each is handled.

Usage::

    python benchmarks/probe_bad_inputs.py [--show clear|unclear|traceback|silent|all] [--match TEXT]

Prints one line per case that is not a clear error (or per case of the ``--show`` classes), then
the counts: tried / clear error / unclear message / raw traceback / silent acceptance. Exit status
1 if any case is not a clear error.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import bad_inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", nargs="*", default=["unclear", "traceback", "silent"])
    parser.add_argument("--match", default=None, help="only cases whose id contains TEXT")
    args = parser.parse_args(argv)
    show = set(bad_inputs.OUTCOMES) if "all" in args.show else set(args.show)
    start = time.perf_counter()
    cases = bad_inputs.all_cases()
    if args.match:
        cases = [c for c in cases if args.match in c.id]
    counts: collections.Counter[str] = collections.Counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for case in cases:
                outcome = bad_inputs.classify(case)
                counts[outcome.kind] += 1
                if outcome.kind in show:
                    message = " ".join(outcome.message.split())[:160]
                    print(f"{outcome.kind:9s} {case.id}  [{case.field}]  {message}", flush=True)
    finally:
        bad_inputs.cleanup()
    print(
        f"tried {len(cases)} / clear error {counts['clear']} / unclear message "
        f"{counts['unclear']} / raw traceback {counts['traceback']} / silent {counts['silent']}"
        f"  ({time.perf_counter() - start:.0f} s)"
    )
    return 0 if counts["clear"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
