#!/usr/bin/env python3
"""Start-up cost of the CLI as whole processes: a missing model (the fail-fast path) and
``--help``, against a bare ``python -c pass`` measured alternately in the same run.

    python benchmarks/bench_start.py [--repeats 15]

Prints the median and the spread (min..max) of wall time per command and its ratio to the bare
interpreter; the issue's goal is an exit within 0.5 s for a missing file.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    commands = {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "kerasaudit audit missing.keras": [
            py, "-m", "kerasaudit", "audit", "missing.keras", "-d", "missing.npz",
        ],
        "kerasaudit prune missing.keras": [
            py, "-m", "kerasaudit", "prune", "missing.keras", "-d", "missing.npz", "--ratio", "0.1",
        ],
        "kerasaudit --help": [py, "-m", "kerasaudit", "--help"],
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for cmd in commands.values():  # warm the file cache once
            wall(cmd, Path(tmp))
        for _ in range(args.repeats):  # alternate, so drifting load hits every command alike
            for name, cmd in commands.items():
                times[name].append(wall(cmd, Path(tmp)))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':34} {'median s':>9} {'min..max s':>13} {'× baseline':>11}")
    for name, values in times.items():
        med = statistics.median(values)
        spread = f"{min(values):.3f}..{max(values):.3f}"
        print(f"{name:34} {med:9.3f} {spread:>13} {med / base:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
