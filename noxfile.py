"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The same test command as the README and .ci/run."""
    session.install("-e", ".[test]")
    workers = min(os.cpu_count() or 1, 4)  # as .ci/run: pytest-xdist, at most four processes
    session.run("pytest", "-n", str(workers), "--dist", "worksteal", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "kerasaudit", "tests", "benchmarks", "scripts", "noxfile.py")
    session.run("ruff", "format", "--check", "kerasaudit", "tests", "benchmarks", "scripts")
    session.run("mypy", "kerasaudit", "benchmarks")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Performance benchmarks; each prints ratios against a baseline measured in the same run."""
    session.install("-e", ".")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """A longer fuzzing run of the loader (random, 2,000 mutated files per format by default;
    `nox -s fuzz -- 10000` for more). The test suite runs 30 derandomized ones."""
    session.install("-e", ".[test]")
    examples = session.posargs[0] if session.posargs else "2000"
    session.run(
        "pytest",
        "tests/test_fuzz_loading.py",
        "-p",
        "no:cacheprovider",
        "--timeout=0",  # a long campaign; each example has its own 60 s hang limit
        env={"KERASAUDIT_FUZZ_EXAMPLES": examples},
    )


@nox.session(python="3.11")
def zoo_build(session: nox.Session) -> None:
    """Train the efficacy zoo (47 models, 2-15 min each on 2 CPU cores; skips what is built).
    Needs Debian's dataset-fashion-mnist package. `nox -s zoo_build -- NAME ...` for some."""
    session.install("-e", ".")
    session.run("python", "benchmarks/zoo/zoo.py", "build", *session.posargs)


@nox.session(python="3.11")
def zoo(session: nox.Session) -> None:
    """Evaluate kerasaudit on the built zoo (each stage cached per model under
    benchmarks/zoo/build/results): evidence (reverse), the known-trigger prune chain, defend on
    the backdoored models, then the calibration report and the README table."""
    session.install("-e", ".")
    backdoored = session.run(
        "python",
        "-c",
        "import sys; sys.path.insert(0, 'benchmarks/zoo'); import recipes; "
        "print(' '.join(r.name for r in recipes.RECIPES if r.family != 'clean'))",
        silent=True,
    )
    names = str(backdoored).split()
    for stage, which in (("evidence", []), ("known", names), ("defend", names)):
        session.run("python", "benchmarks/zoo/zoo.py", stage, *which)
    session.run("python", "benchmarks/zoo/zoo.py", "calibrate")
    session.run("python", "benchmarks/zoo/zoo.py", "table")


@nox.session(python="3.11")
def external(session: nox.Session) -> None:
    """The external replication: the issue's eight models and a second set of seven (SIG, warp,
    random position, all-to-all, two triggers, 1 % poisoning, a residual net) trained by
    benchmarks/external/train.py (code apart from the zoo's; 4-28 min each on one core), then
    the CLI as the judge runs it (defend; the README's known-trigger prune chain), then
    benchmarks/external/results.md. Needs Debian's dataset-fashion-mnist package."""
    session.install("-e", ".")
    session.run("python", "benchmarks/external/train.py")
    session.run("python", "benchmarks/external/judge.py")
    session.run("python", "benchmarks/external/judge.py", "--table")
