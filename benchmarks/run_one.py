"""Run one scenario for one system in this (fresh) process and print the result.

``python -m benchmarks.run_one SYSTEM SCENARIO [--quick] --json``

The last line printed is ``EXIT_MARK <time.monotonic()>``, written just before the
interpreter starts shutting down: the parent subtracts it from the moment the process
ended to get the interpreter's exit time (CLOCK_MONOTONIC is system-wide on Linux).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from typing import List, Optional

from .scenarios import SCENARIOS, run_scenario
from .systems import SYSTEMS


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_one")
    parser.add_argument("system", choices=list(SYSTEMS))
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller, faster parameters")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)

    # Same logging for every system: an application that logs WARNING and up, somewhere
    # we do not look (no stderr spam from APScheduler's "skipped" warnings).
    logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()])
    try:
        result = run_scenario(args.system, args.scenario, "quick" if args.quick else "full")
        status = 0
    except Exception:
        result = {"metrics": {}, "info": {}, "errors": [traceback.format_exc(limit=5)]}
        status = 1
    result.update(
        system=args.system,
        scenario=args.scenario,
        mode="quick" if args.quick else "full",
        python=sys.version.split()[0],
    )
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result["metrics"].items():
            print(f"{key:>20}: {value}")
        for error in result["errors"]:
            print(f"error: {error}")
    print(f"EXIT_MARK {time.monotonic()!r}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
