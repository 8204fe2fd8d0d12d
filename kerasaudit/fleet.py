"""Audit a fleet of models: ``kerasaudit batch``.

Each model is audited by its own worker process — ``python -m kerasaudit audit`` with the same
options as a single-model audit — so a hostile or broken model can take down nothing but its
worker (and the loader's sandbox bounds it further). A worker killed or timed out is retried
once, then recorded as an error: no model is lost. Results go to a SQLite database, one row
per (model, data, settings), each identified by content hashes, so ``--resume`` skips what is
already known even when files are renamed or moved, and a changed file is audited again.

Statuses (from the worker's exit code): ``found`` (1: a backdoor), ``clean`` (0), ``refused``
(3: unsafe model), ``bad input`` (2: unreadable model or data), ``error`` (4, killed, timed
out, or no report). The fleet's exit code: 1 if any model has a backdoor, else 4 if any audit
failed, else 3 if any model was refused, else 2 if any input was bad, else 0.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kerasaudit import __version__
from kerasaudit.errors import BadInputError, ExitCode

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
MANIFEST_SUFFIXES = (".txt", ".lst")
STATUSES = ("found", "clean", "refused", "bad input", "error")
_BY_EXIT = {0: "clean", 1: "found", 2: "bad input", 3: "refused"}
RETRIES = 1
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    data TEXT NOT NULL,
    data_sha256 TEXT NOT NULL,
    settings TEXT NOT NULL,
    settings_sha256 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('found', 'clean', 'refused', 'bad input', 'error')),
    exit_code INTEGER,
    backdoor INTEGER,
    targets TEXT,
    all_to_all INTEGER,
    message TEXT,
    attempts INTEGER NOT NULL,
    seconds REAL NOT NULL,
    finished TEXT NOT NULL,
    kerasaudit_version TEXT NOT NULL,
    report TEXT,
    UNIQUE (model_sha256, data_sha256, settings_sha256)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# --- inputs --------------------------------------------------------------------------------


def expand_models(specs: Sequence[str]) -> list[Path]:
    """Model paths from paths, directories (searched recursively for .keras/.h5 files and
    SavedModel directories), glob patterns, and manifests (``.txt``/``.lst``: one path per
    line, ``#`` comments, relative to the manifest). In order, each model once."""
    found: list[Path] = []
    for spec in specs:
        found += _expand_one(spec)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise BadInputError(f"no model found in {', '.join(specs)}")
    return list(unique.values())


def _expand_one(spec: str) -> list[Path]:
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        return [p for m in matches for p in _models_in(m)]
    path = Path(spec)
    if not path.exists():
        raise BadInputError(f"model {spec} does not exist")
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entry = Path(line) if Path(line).is_absolute() else path.parent / line
                if not entry.exists():
                    raise BadInputError(f"{path}: model {line} does not exist")
                out.append(entry)
        return out
    return _models_in(path) if path.is_dir() else [path]


def _models_in(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() in MODEL_SUFFIXES else []
    if (path / "saved_model.pb").is_file():
        return [path]
    out: list[Path] = []
    for child in sorted(path.iterdir()):
        if child.is_symlink():
            continue
        out += _models_in(child)
    return out


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's relative paths and file bytes."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --- one model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    model: Path
    model_sha256: str


@dataclass
class Outcome:
    model: str
    model_sha256: str
    status: str
    exit_code: int | None
    attempts: int
    seconds: float
    message: str
    report: dict[str, Any] | None = None
    finished: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def backdoor(self) -> bool | None:
        return None if self.report is None else bool(self.report.get("backdoor"))

    @property
    def targets(self) -> list[int]:
        return [] if self.report is None else list(self.report.get("targets", []))

    @property
    def all_to_all(self) -> bool:
        return bool(self.report and self.report.get("all_to_all"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(backdoor=self.backdoor, targets=self.targets, all_to_all=self.all_to_all)
        return out


def run_one(job: Job, audit_args: Sequence[str], timeout: float | None) -> Outcome:
    """Audit one model in a worker process; retry once if the worker dies or times out."""
    started = time.perf_counter()
    message = ""
    code: int | None = None
    for attempt in range(1, RETRIES + 2):
        with tempfile.TemporaryDirectory(prefix="kerasaudit-batch-") as tmp:
            report_path = Path(tmp) / "audit.json"
            argv = [sys.executable, "-m", "kerasaudit", "audit", str(job.model), *audit_args]
            argv += ["--format", "json", "-o", str(report_path), "-q"]
            # Its own session, so that a timeout kills the worker with everything it started
            # (the loader's sandbox children included). Its TMPDIR is ours: a killed worker
            # cannot clean up, and its private copy of the model goes with this directory.
            env = {**os.environ, "TMPDIR": tmp}
            with subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, start_new_session=True, env=env,
            ) as worker:  # fmt: skip
                try:
                    _, stderr = worker.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(worker)
                    code, message = None, f"worker timed out after {timeout:g} s"
                    continue
                except BaseException:
                    _kill_group(worker)
                    raise
            code = worker.returncode
            message = _last_line(stderr)
            status = _BY_EXIT.get(code)
            if status is None:  # 4 (a bug) or killed by a signal: retry, then an error
                what = f"killed by signal {-code}" if code < 0 else f"exit {code}"
                message = f"worker {what}: {message}" if message else f"worker {what}"
                continue
            report = None
            if status in ("found", "clean"):
                try:
                    report = json.loads(report_path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    code, message = None, f"worker wrote no readable report: {exc}"
                    continue
            return Outcome(str(job.model), job.model_sha256, status, code, attempt,
                           time.perf_counter() - started, message, report)  # fmt: skip
    return Outcome(str(job.model), job.model_sha256, "error", code, RETRIES + 1,
                   time.perf_counter() - started, message)  # fmt: skip


def _kill_group(worker: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the store -----------------------------------------------------------------------------


class ResultStore:
    """The SQLite database of results (written by the coordinating process only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path)
            self.db.executescript(_SCHEMA)
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise BadInputError(f"--db {path}: not a kerasaudit results database ({exc})") from exc

    def known(self, model_sha: str, data_sha: str, settings_sha: str) -> str | None:
        row = self.db.execute(
            "SELECT status FROM audits WHERE model_sha256 = ? AND data_sha256 = ? "
            "AND settings_sha256 = ?",
            (model_sha, data_sha, settings_sha),
        ).fetchone()
        return None if row is None else str(row[0])

    def record(
        self, outcome: Outcome, data: str, data_sha: str, settings: str, settings_sha: str
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO audits (model, model_sha256, data, data_sha256, settings, "
            "settings_sha256, status, exit_code, backdoor, targets, all_to_all, message, "
            "attempts, seconds, finished, kerasaudit_version, report) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                outcome.model, outcome.model_sha256, data, data_sha, settings, settings_sha,
                outcome.status, outcome.exit_code,
                None if outcome.backdoor is None else int(outcome.backdoor),
                json.dumps(outcome.targets), int(outcome.all_to_all), outcome.message,
                outcome.attempts, outcome.seconds, outcome.finished, __version__,
                None if outcome.report is None else json.dumps(outcome.report),
            ),
        )  # fmt: skip
        self.db.commit()

    def close(self) -> None:
        self.db.close()


# --- the fleet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetResult:
    outcomes: tuple[Outcome, ...]  # this run's, in the order they finished
    skipped: tuple[tuple[str, str], ...]  # (model, recorded status): already known (--resume)
    db: str
    seconds: float

    def count(self, status: str) -> int:
        """Models with this status: audited in this run, or skipped with it recorded."""
        return sum(o.status == status for o in self.outcomes) + sum(
            recorded == status for _, recorded in self.skipped
        )

    @property
    def exit_code(self) -> int:
        if self.count("found"):
            return int(ExitCode.FINDINGS)
        if self.count("error"):
            return int(ExitCode.INTERNAL)
        if self.count("refused"):
            return int(ExitCode.UNSAFE)
        if self.count("bad input"):
            return int(ExitCode.BAD_INPUT)
        return int(ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "seconds": self.seconds,
            "counts": {s: self.count(s) for s in STATUSES},
            "skipped": [{"model": m, "status": s} for m, s in self.skipped],
            "exit_code": self.exit_code,
            "models": [o.to_dict() for o in self.outcomes],
        }


def run_fleet(
    models: Sequence[Path],
    data: Path,
    audit_args: Sequence[str],
    *,
    db: Path,
    workers: int = 1,
    resume: bool = False,
    timeout: float | None = None,
    on_done: Callable[[Outcome, int, int], None] | None = None,
    on_skip: Callable[[Path], None] | None = None,
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
) -> FleetResult:
    """Audit every model (module doc); results are recorded as each model finishes. The exit
    code counts skipped models by their recorded status, so a resumed fleet reports the same."""
    started = time.perf_counter()
    settings = json.dumps(list(audit_args))
    settings_sha = hashlib.sha256(settings.encode()).hexdigest()
    data_sha = content_sha256(data)
    store = ResultStore(db)
    try:
        jobs, skipped = [], []
        for model in models:
            job = Job(model, content_sha256(model))
            status = store.known(job.model_sha256, data_sha, settings_sha)
            if resume and status is not None and status != "error":
                skipped.append((str(model), status))
                if on_skip is not None:
                    on_skip(model)
                continue
            jobs.append(job)
        outcomes: list[Outcome] = []

        def finished(outcome: Outcome) -> None:
            store.record(outcome, str(data), data_sha, settings, settings_sha)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome, len(outcomes), len(jobs))

        if ray_address is not None:
            _run_on_ray(jobs, audit_args, timeout, ray_address, cpus_per_task, finished)
        else:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = [pool.submit(run_one, job, audit_args, timeout) for job in jobs]
                for future in as_completed(futures):
                    finished(future.result())
    finally:
        store.close()
    return FleetResult(tuple(outcomes), tuple(skipped), str(db), time.perf_counter() - started)


def _run_on_ray(
    jobs: Sequence[Job],
    audit_args: Sequence[str],
    timeout: float | None,
    address: str,
    cpus_per_task: float,
    finished: Callable[[Outcome], None],
) -> None:
    """One Ray task per model (``address``: ``auto``, ``ray://…`` or ``host:port``), each
    running :func:`run_one` — the same worker process as locally — with ``cpus_per_task`` CPUs.
    Ray re-runs a task whose worker died (once); a task that fails twice is an error. The
    models and the data must be readable at the same paths on every node."""
    from kerasaudit._ray import ray_session

    with ray_session(address) as ray:
        from ray.exceptions import RayError

        task = ray.remote(num_cpus=cpus_per_task, max_retries=RETRIES)(run_one)
        pending = {task.remote(job, list(audit_args), timeout): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayError as exc:
                    message = f"Ray task failed twice: {type(exc).__name__}: {exc}"
                    outcome = Outcome(str(job.model), job.model_sha256, "error", None,
                                      RETRIES + 1, 0.0, message.splitlines()[0])  # fmt: skip
                finished(outcome)


def jsonl_lines(result: FleetResult) -> Iterable[str]:
    for outcome in result.outcomes:
        yield json.dumps(outcome.to_dict(), allow_nan=False, default=str)


def relative_uri(path: str) -> str:
    """A SARIF artifact URI for a model path: relative to the working directory when inside it."""
    from urllib.parse import quote

    resolved = Path(path).resolve()
    try:
        shown = resolved.relative_to(Path(os.getcwd()).resolve()).as_posix()
    except ValueError:
        return resolved.as_uri()
    return quote(shown)
