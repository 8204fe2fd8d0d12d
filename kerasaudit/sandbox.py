"""Resource sandbox for untrusted models: the static check and a canary Keras load run in a
child process under ``setrlimit`` limits, in a working directory the caller removes.

Why a child: the static checks bound every size they can see, but the last line of defence
against a resource bomb they miss has to be the kernel. A child that exceeds its address-space
(RLIMIT_AS), CPU-time (RLIMIT_CPU) or file-size (RLIMIT_FSIZE) limit, or its wall-clock
deadline, dies alone; the user's process reports a one-line refusal (exit 3) instead of being
OOM-killed, and never held the memory. Core dumps are off, and the child's temporary files
(``TMPDIR``, Keras' extraction directories) live in the caller's private directory.

How the model still ends up usable in the caller: the child is a *canary*. It loads the
private copy exactly as the caller will (safe mode, same custom objects); only when that
succeeded inside the limits does the caller load the same bytes itself. What it costs is the
child's load (plus a fork); the child shares the TensorFlow import with its parent:

* ``fork`` straight from the caller when TensorFlow is imported but its runtime not started
  (the CLI: nothing has run an op yet; no GPU initialised) — no second import;
* otherwise (a library user or a test process that already ran TensorFlow, whose thread pools
  a forked child would not have) a *zygote*: one helper process per caller, started on first
  use, that imports TensorFlow once, never runs it, and forks a fresh child per request.

Not a security boundary against code execution: that is what the static checks and Keras'
safe mode are for. ``KERASAUDIT_SANDBOX=0`` turns it off for trusted pipelines; the limits
are configurable (``KERASAUDIT_SANDBOX_MEMORY``, ``_CPU``, ``_TIMEOUT``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kerasaudit.errors import (
    BadInputError,
    KerasauditError,
    ModelResourceError,
    UnsafeModelError,
)

ENV_SANDBOX = "KERASAUDIT_SANDBOX"
ENV_MEMORY = "KERASAUDIT_SANDBOX_MEMORY"
ENV_CPU = "KERASAUDIT_SANDBOX_CPU"
ENV_TIMEOUT = "KERASAUDIT_SANDBOX_TIMEOUT"

GIB = 1024**3
MIB = 1024**2
MAX_RESULT_BYTES = 64 * MIB
_EXIT_OK, _EXIT_ERROR = 0, 70


def enabled() -> bool:
    """Sandboxed unless ``KERASAUDIT_SANDBOX`` is 0/off/false/no (trusted pipelines)."""
    return os.environ.get(ENV_SANDBOX, "1").strip().lower() not in ("0", "off", "false", "no")


@dataclass(frozen=True)
class Limits:
    memory: int  # bytes of address space the child may add to what it had when it started
    cpu: int  # CPU seconds (SIGXCPU, then SIGKILL 5 s later)
    file_size: int  # bytes: the largest file the child may write (SIGXFSZ)
    wall: float  # seconds before the parent kills it

    def describe(self) -> str:
        return (
            f"limits: +{self.memory / MIB:,.0f} MiB address space, {self.cpu} s CPU, "
            f"{self.wall:.3g} s wall, files ≤ {self.file_size / MIB:,.0f} MiB"
        )


def _env_bytes(name: str) -> int | None:
    raw = os.environ.get(name, "").strip().upper()
    if not raw:
        return None
    scale = {"K": 1024, "M": MIB, "G": GIB, "T": 1024 * GIB}.get(raw[-1], 1)
    digits = raw[:-1] if raw[-1] in "KMGT" else raw
    try:
        value = float(digits) * scale
    except ValueError:
        raise BadInputError(f"{name}={raw!r}: expected a size such as 4G or 512M") from None
    if value <= 0:
        raise BadInputError(f"{name}={raw!r}: expected a positive size")
    return int(value)


def _env_seconds(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadInputError(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise BadInputError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def check_limits(file_bytes: int) -> Limits:
    """For the static check: it streams the archive, spools the weights to disk and parses
    JSON under the caps in ``kerasaudit.safety``; a gigabyte is far more than it needs, and a
    config at every cap at once takes ~3 s of CPU. A reader caught in a loop by a crafted
    file is stopped after 10 s of CPU (plus the time to read the file)."""
    from kerasaudit.safety import ARCHIVE_INFLATION_FLOOR, ARCHIVE_INFLATION_LIMIT

    cpu = int(10 + file_bytes / (20 * MIB))
    return Limits(
        memory=GIB,
        cpu=cpu,
        file_size=ARCHIVE_INFLATION_FLOOR + ARCHIVE_INFLATION_LIMIT * file_bytes + MIB,
        wall=3.0 * cpu + 15,
    )


def load_limits(file_bytes: int) -> Limits:
    """For the Keras load: the variables, the weights file read into memory, a transient
    copy of each array and TensorFlow's own working memory fit in 1 GiB + 6 × the file."""
    # Never above the machine's memory, so the limit bites before the kernel's OOM killer.
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    memory = _env_bytes(ENV_MEMORY) or min(GIB + 6 * file_bytes, physical)
    cpu = _env_seconds(ENV_CPU) or 120 + file_bytes / (20 * MIB)
    wall = _env_seconds(ENV_TIMEOUT) or 2 * cpu + 30
    return Limits(
        memory=memory, cpu=int(cpu), file_size=64 * MIB + 4 * file_bytes, wall=float(wall)
    )


class SandboxInternalError(RuntimeError):
    """The sandboxed work failed in a way no input explains (a bug): exit 4."""


# --------------------------------------------------------------------------------------------
# Requests (what a child does) and their results
# --------------------------------------------------------------------------------------------


def run_check(copy: Path, custom: frozenset[str], shown: Path, workdir: Path) -> Any:
    """``safety.check_model_file`` in a sandboxed child; returns its SafetyReport."""
    import h5py  # noqa: F401  (imported once here, shared by the fork; Keras needs it later)

    from kerasaudit.safety import SafetyReport

    request = {
        "op": "check",
        "copy": str(copy),
        "custom": sorted(custom),
        "shown": str(shown),
    }
    if copy.is_dir():
        from kerasaudit import _tf

        _tf.tf()  # a SavedModel's protobufs are parsed with TensorFlow's classes: import once
    limits = check_limits(_disk_size(copy))
    result = _run(request, limits, workdir, phase="checking it", fork_only=True)
    return SafetyReport.from_dict(result["report"])


def run_load(
    request: dict[str, Any], custom: dict[str, Any], file_bytes: int, workdir: Path
) -> None:
    """The canary: ``loading.prepare_and_load`` in a sandboxed child. Raises what the load
    would raise (BadInputError, UnsafeModelError), or UnsafeModelError when the child hits a
    limit or dies."""
    limits = load_limits(file_bytes)
    _run({"op": "load", **request}, limits, workdir, phase="loading it", custom=custom)


def _perform(request: dict[str, Any], custom: dict[str, Any] | None) -> dict[str, Any]:
    """Executed in the child. Every outcome becomes a JSON-able dict."""
    from kerasaudit import loading, safety

    try:
        if request["op"] == "check":
            report = safety.check_model_file(
                Path(request["copy"]), request["custom"], shown=Path(request["shown"])
            )
            return {"status": "ok", "report": report.to_dict()}
        if request["op"] == "load":
            _limit_tensorflow_threads()
            if custom is None:
                file = request.get("custom_objects_file")
                custom = loading.load_custom_objects(Path(file)) if file else {}
            loading.prepare_and_load(request, custom)
            return {"status": "ok"}
        raise ValueError(f"unknown sandbox request {request['op']!r}")
    except ModelResourceError as exc:
        return {"status": "resources", "message": exc.reason}
    except UnsafeModelError as exc:
        return {"status": "unsafe", "where": exc.where, "reason": exc.reason}
    except KerasauditError as exc:
        return {"status": "bad-input", "message": str(exc)}
    except MemoryError:
        return {"status": "resources", "message": "ran out of memory"}
    except RecursionError:
        return {"status": "bad-input", "message": f"{request.get('shown')}: nested too deeply"}
    except Exception as exc:
        return {
            "status": "internal",
            "message": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc()[-8000:],
        }


def _interpret(outcome: dict[str, Any], limits: Limits, phase: str, shown: str) -> dict[str, Any]:
    """Turn what happened to the child into a result, or the error the caller raises."""
    result = outcome.get("result")
    if outcome.get("timed_out"):
        late = f"{phase} did not finish within {limits.wall:.3g} s in the sandbox"
        raise ModelResourceError("<model>", f"{late} ({limits.describe()})")
    if isinstance(result, dict):
        status = result.get("status")
        if status == "ok":
            return result
        if status == "unsafe":
            raise UnsafeModelError(str(result.get("where")), str(result.get("reason")))
        if status == "bad-input":
            raise BadInputError(str(result.get("message")))
        if status == "resources":
            where = f"{phase} inside the sandbox, {limits.describe()}"
            raise ModelResourceError("<model>", f"{result.get('message')} ({where})")
        if os.environ.get("KERASAUDIT_DEBUG"):
            sys.stderr.write(str(result.get("traceback", "")))
        raise SandboxInternalError(f"sandboxed {phase}: {result.get('message')}")
    number = outcome.get("signal")
    if number is not None:
        name = _signal_name(number)
        if number == signal.SIGXCPU:
            what = f"exceeded the CPU-time limit ({limits.cpu} s)"
        elif number == signal.SIGXFSZ:
            what = f"tried to write a file larger than {limits.file_size:,} bytes"
        elif number == signal.SIGKILL:
            what = "was killed (out of memory)"
        else:
            what = f"crashed ({name}), most likely on the memory limit"
    else:
        what = f"died (exit status {outcome.get('exit')}) without a result"
    if phase == "checking it" and number not in (signal.SIGXCPU, signal.SIGXFSZ):
        # The static check only parses; a reader that crashes has met a malformed file.
        raise BadInputError(f"{shown}: cannot be read: the file reader {what} in the sandbox")
    raise ModelResourceError("<model>", f"{phase} {what} inside the sandbox ({limits.describe()})")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --------------------------------------------------------------------------------------------
# Running a request in a child
# --------------------------------------------------------------------------------------------


def _run(
    request: dict[str, Any],
    limits: Limits,
    workdir: Path,
    *,
    phase: str,
    fork_only: bool = False,
    custom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    request = {**request, "workdir": str(workdir), "limits": asdict(limits)}
    if fork_only or tensorflow_is_fork_safe():
        outcome = fork_and_run(request, limits, workdir, custom)
    else:
        outcome = _Zygote.instance().run(request, limits)
    return _interpret(outcome, limits, phase, str(request.get("shown", "")))


def tensorflow_is_fork_safe() -> bool:
    """A forked child can run TensorFlow only if the parent never started its runtime (thread
    pools and device contexts do not survive a fork) nor initialised a GPU."""
    if "tensorflow" not in sys.modules:
        return True
    try:
        from tensorflow.python.eager import context
    except ImportError:  # pragma: no cover - a TensorFlow without this module
        return False
    ctx = context.context_safe()
    if ctx is None:
        return True
    if getattr(ctx, "_context_handle", True) is not None:
        return False
    devices = getattr(ctx, "_physical_devices", None) or []
    return not any(getattr(d, "device_type", "") == "GPU" for d in devices)


def fork_and_run(
    request: dict[str, Any], limits: Limits, workdir: Path, custom: dict[str, Any] | None
) -> dict[str, Any]:
    """Fork, run ``_perform`` under the limits in the child, collect its result."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() with threads" (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = _EXIT_ERROR
        try:
            os.close(read_fd)
            _enter_sandbox(limits, workdir)
            result = _perform(request, custom)
            _write_all(write_fd, json.dumps(result).encode())
            code = _EXIT_OK
        except BaseException:
            code = _EXIT_ERROR
        finally:
            os._exit(code)
    os.close(write_fd)
    return _collect(pid, read_fd, limits)


def _collect(pid: int, read_fd: int, limits: Limits) -> dict[str, Any]:
    deadline = time.monotonic() + limits.wall
    chunks: list[bytes] = []
    size = 0
    timed_out = False
    status: int | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size <= MAX_RESULT_BYTES:
                    chunks.append(chunk)
        while not timed_out:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.01)
    finally:
        os.close(read_fd)
        if status is None:  # timed out, or interrupted: the child does not outlive us
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    outcome: dict[str, Any] = {"timed_out": timed_out, "signal": None, "exit": None}
    if os.WIFSIGNALED(status):
        outcome["signal"] = os.WTERMSIG(status)
    elif os.WIFEXITED(status):
        outcome["exit"] = os.WEXITSTATUS(status)
    if chunks and size <= MAX_RESULT_BYTES and not timed_out:
        with contextlib.suppress(ValueError):
            outcome["result"] = json.loads(b"".join(chunks))
    return outcome


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)


def _enter_sandbox(limits: Limits, workdir: Path) -> None:
    """In the child, before it touches the model: quiet stdio, private temp dir, limits."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not os.environ.get("KERASAUDIT_DEBUG"):
        os.dup2(devnull, 2)
    os.close(devnull)
    # Fresh Python streams: a lock the parent's threads held at fork time stays held.
    sys.stdin = open(os.devnull)  # noqa: SIM115
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    sys.stderr = os.fdopen(os.dup(2), "w") if os.environ.get("KERASAUDIT_DEBUG") else sys.stdout
    os.environ["TMPDIR"] = str(workdir)
    # oneDNN's CPU allocator retries a failed allocation for 10 s before giving up; the
    # system allocator fails at once (read when TensorFlow first allocates, i.e. here).
    os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    tempfile.tempdir = str(workdir)
    os.chdir(workdir)
    _limit_malloc_arenas()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _lower(resource.RLIMIT_FSIZE, limits.file_size, limits.file_size)
    _lower(resource.RLIMIT_CPU, limits.cpu, limits.cpu + 5)
    address_space = _address_space() + limits.memory
    _lower(resource.RLIMIT_AS, address_space, address_space)


def _lower(which: int, soft: int, hard: int) -> None:
    current_soft, current_hard = resource.getrlimit(which)

    def capped(value: int, current: int) -> int:
        return value if current == resource.RLIM_INFINITY else min(value, current)

    new_hard = capped(hard, current_hard)
    resource.setrlimit(which, (min(capped(soft, current_soft), new_hard), new_hard))


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _limit_malloc_arenas() -> None:
    # glibc reserves 64 MiB of address space per malloc arena (up to 8 per core): with many
    # cores that alone would exhaust RLIMIT_AS. Two arenas are plenty for a load.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def _limit_tensorflow_threads() -> None:
    # Thread stacks count against RLIMIT_AS too; a canary load needs no parallelism, and this
    # keeps its footprint independent of the machine's core count.
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # the runtime is already up (the zygote's child)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)


def _disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# The zygote: a helper that imported TensorFlow but never ran it, forking one child per request
# --------------------------------------------------------------------------------------------


class _Zygote:
    _lock = threading.Lock()
    _current: _Zygote | None = None

    @classmethod
    def instance(cls) -> _Zygote:
        with cls._lock:
            if cls._current is None or cls._current.proc.poll() is not None:
                cls._current = cls()
            return cls._current

    def __init__(self) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # the canary loads on the CPU; no CUDA state to fork
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        debug = bool(os.environ.get("KERASAUDIT_DEBUG"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kerasaudit.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            env=env,
        )
        self.lock = threading.Lock()
        atexit.register(self.close)

    def run(self, request: dict[str, Any], limits: Limits) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise SandboxInternalError(f"the sandbox helper is gone ({exc})") from exc
            # The zygote enforces the child's deadline; its own start-up (a TensorFlow import)
            # comes on top the first time.
            line = _read_line(self.proc.stdout.fileno(), limits.wall + 120)
        if line is None:
            self.close()
            raise SandboxInternalError("the sandbox helper did not answer")
        outcome: dict[str, Any] = json.loads(line)
        return outcome

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _read_line(fd: int, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        data += chunk
    return data


def _zygote_main() -> int:
    """``python -m kerasaudit.sandbox``: answer requests on stdin, one JSON line each."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # TensorFlow's chatter must not corrupt the protocol
    os.close(devnull)
    from kerasaudit import _tf

    _tf.keras()  # import once; never run an op here, so every fork starts clean
    for line in proto_in:
        request = json.loads(line)
        limits = Limits(**request["limits"])
        outcome = fork_and_run(request, limits, Path(request["workdir"]), None)
        proto_out.write(json.dumps(outcome).encode() + b"\n")
        proto_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_zygote_main())
