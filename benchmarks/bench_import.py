"""Import time of ``uetransforms``: wall clock of fresh interpreters and ``-X importtime``'s total.

Compares checkouts side by side in one run (alternating, so machine load hits both alike):

    python benchmarks/bench_import.py --repeat 5 BEFORE_CHECKOUT AFTER_CHECKOUT

Each checkout is the working directory and first on PYTHONPATH (``-c`` puts the working
directory first on ``sys.path``, so running from one checkout would import it for both); ``python -c "import uetransforms"`` runs ``--repeat``
times per checkout (median wall clock, after one untimed warm-up that fills the page cache), and
once more under ``-X importtime`` (the cumulative microseconds of the ``uetransforms`` line).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time


def _env(checkout: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}


def wall(checkout: str, code: str = "import uetransforms") -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=_env(checkout), cwd=checkout, check=True)
    return time.perf_counter() - start


def importtime_us(checkout: str) -> int:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import uetransforms"], env=_env(checkout),
                         cwd=checkout, check=True, capture_output=True, text=True).stderr
    line = [ln for ln in err.splitlines() if re.search(r"\|\s*uetransforms$", ln)][-1]
    return int(line.split("|")[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkouts", nargs="+", help="repository roots to compare")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for c in args.checkouts:
        wall(c)  # warm-up: page cache, .pyc
    times: dict[str, list[float]] = {c: [] for c in args.checkouts}
    for _ in range(args.repeat):
        for c in args.checkouts:
            times[c].append(wall(c))
    print(f"{'checkout':<40} {'median wall s':>13} {'min':>6} {'max':>6} {'-X importtime total ms':>22}")
    for c in args.checkouts:
        t = times[c]
        print(f"{c:<40} {statistics.median(t):13.2f} {min(t):6.2f} {max(t):6.2f} {importtime_us(c) / 1000:22.0f}")
    # Laziness moves the cost to first use; it does not remove it. This is what a fit pays.
    use = "import uetransforms as ue; ue.fit"
    fit_times = {c: statistics.median([wall(c, use) for _ in range(args.repeat)]) for c in args.checkouts}
    print(f"\nmedian wall s of {use!r}: " + ", ".join(f"{c}: {t:.2f}" for c, t in fit_times.items()))


if __name__ == "__main__":
    main()
