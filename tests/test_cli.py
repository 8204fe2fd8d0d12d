"""The CLI contract: stdout carries only the report, exit codes, -o/--force, lazy TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kerasaudit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["inspect", "--help"],
        ["inspect"],
        ["inspect", "m.keras", "--format", "xml"],
        ["nope"],
    ],
    ids=["help", "command-help", "missing-arg", "bad-choice", "unknown-command"],
)
def test_help_and_usage_errors_never_import_tensorflow(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from kerasaudit.cli.app import app\n"
        "try:\n"
        f"    app({argv!r})\n"
        "except SystemExit as exc:\n"
        "    heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'h5py') if m in sys.modules]\n"
        "    print('HEAVY=' + ','.join(heavy))\n"
        "    print('CODE=' + str(exc.code))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY=\n" in result.stdout, result.stdout + result.stderr
    expected = "0" if "--help" in argv else "2"
    assert f"CODE={expected}" in result.stdout


def test_inspect_json_is_clean_on_stdout(model_files: dict[str, Path]) -> None:
    result = _run("inspect", str(model_files["h5_keras2"]), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds only the JSON document
    assert report["schema"] == "kerasaudit.inspect/1"
    assert report["format"] == "h5" and report["keras_version"].startswith("2.")
    assert [layer["path"] for layer in report["auditable_layers"]] == ["features/f_conv1", "dw"]
    assert report["auditable_layers"][0]["batch_norm"] == "features/f_bn1"
    assert (
        "I0000" not in result.stderr and "absl" not in result.stderr
    )  # TF start-up noise is dropped


def test_inspect_table_names_every_auditable_layer(model_files: dict[str, Path]) -> None:
    result = runner.invoke(
        app, ["inspect", str(model_files["keras_nested"])], env={"NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    assert "features/f_conv1" in result.stdout and "conv2" in result.stdout
    assert "f_bn1" in result.stdout  # its BatchNorm, named inside `features`
    assert "\x1b[" not in result.stdout  # NO_COLOR honoured


def test_inspect_table_fits_80_columns(model_files: dict[str, Path]) -> None:
    """At 80 columns each auditable layer of a BatchNorm net is one row of at most 80
    characters: names whole, the output shape per image, "scanned at" naming the layer
    whose output is measured where that is another one (beside a nested layer, by its name in
    that nested model)."""
    result = runner.invoke(
        app, ["inspect", str(model_files["keras"])], env={"COLUMNS": "80", "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if line.startswith("Auditable layers"))
    rows = [line for line in lines[start:] if line.startswith("│")]
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    assert [c[0] for c in cells] == ["f_conv1", "conv2"]  # one line each, unfolded
    header = " ".join(line for line in lines[start:] if line.startswith("┃"))
    assert "scanned" in header  # f_conv1 is measured after its BatchNorm's activation
    assert [c[-2] for c in cells] == ["8×8×6", "6×6×4"]
    assert [c[-3] for c in cells] == ["f_relu1", "itself"]
    nested = runner.invoke(
        app, ["inspect", str(model_files["keras_nested"])], env={"COLUMNS": "200"}
    )
    row = next(line for line in nested.stdout.splitlines() if "features/f_conv1" in line)
    assert [c.strip() for c in row.split("│")[6:9]] == ["f_bn1", "f_relu1", "8×8×6"]


def test_unsafe_model_exits_3_with_one_line(tmp_path: Path, keras_module: object) -> None:
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x + 1.0, name="sneaky")(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    result = _run("inspect", str(path))
    assert result.returncode == 3
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sneaky" in lines[0] and "Lambda" in lines[0]
    unsafe = runner.invoke(app, ["inspect", str(path), "--unsafe", "-f", "json"])
    assert unsafe.exit_code == 0
    assert json.loads(unsafe.stdout)["loaded_unsafely"] is True


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p / "missing.keras",
        lambda p: p,
        lambda p: (p / "random.h5").write_bytes(os.urandom(2048)) and p / "random.h5",
    ],
    ids=["missing", "directory", "random-bytes"],
)
def test_bad_model_exits_2_and_writes_nothing(tmp_path: Path, make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["inspect", str(path), "-o", str(out), "-f", "json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert not out.exists()


def test_output_file_is_written_and_never_overwritten_without_force(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "inventory.json"
    first = runner.invoke(app, ["inspect", str(model_files["keras"]), "-f", "json", "-o", str(out)])
    assert first.exit_code == 0 and first.stdout == ""
    assert json.loads(out.read_text())["format"] == "keras"
    out.write_text("keep me")
    second = runner.invoke(
        app, ["inspect", str(model_files["keras"]), "-f", "json", "-o", str(out)]
    )
    assert second.exit_code == 2 and "--force" in second.stderr
    assert out.read_text() == "keep me"
    forced = runner.invoke(app, ["inspect", str(model_files["keras"]), "-o", str(out), "--force"])
    assert forced.exit_code == 0 and "conv2" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]  # no temp files left


def test_quiet_keeps_stderr_empty(model_files: dict[str, Path]) -> None:
    result = _run("inspect", str(model_files["keras"]), "-q", "-f", "json")
    assert result.returncode == 0 and result.stderr == ""


def test_version_and_module_entry_point() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("kerasaudit ")


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "missing.keras", "-d", "data.npz"],
        ["inspect", "missing.keras"],
        ["scan", "missing.keras", "-d", "data.npz"],
        ["evaluate", "missing.keras", "-d", "data.npz"],
        ["prune", "missing.keras", "-d", "data.npz", "--ratio", "0.1", "-c", "linf"],
        ["sweep", "missing.keras", "-d", "data.npz", "-t", "patch:size=2", "--target", "0"],
        ["reverse", "missing.keras", "-d", "data.npz"],
        ["defend", "missing.keras", "-d", "data.npz", "-o", "out.keras"],
        ["gradcam", "missing.keras", "-d", "data.npz", "-o", "cams"],
        ["report", "missing.keras", "-d", "data.npz", "-o", "r.html"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_missing_model_fails_before_tensorflow_is_imported(
    argv: list[str], tmp_path: Path
) -> None:
    """Fail fast: paths are checked before anything heavy is imported (one line, exit 2)."""
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    code = (
        "import sys, time\n"
        "started = time.perf_counter()\n"
        "from kerasaudit.cli.app import app\n"
        "try:\n"
        f"    app({argv!r})\n"
        "except SystemExit as exc:\n"
        "    heavy = ('tensorflow', 'keras', 'tf_keras', 'h5py', 'pydantic')\n"
        "    print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
        "    print('CODE=' + str(exc.code))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert "HEAVY=\n" in result.stdout, result.stdout + result.stderr
    assert "CODE=2" in result.stdout, result.stdout + result.stderr
    assert "missing.keras does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("signame", "code", "word"),
    [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")],
)
def test_a_signal_while_loading_exits_and_removes_the_private_copy(
    model_files: dict[str, Path], tmp_path: Path, signame: str, code: int, word: str
) -> None:
    """A cancelled CI job or `timeout` sends SIGTERM. Python's default would end the process
    without running a `finally`, leaving the copy of an untrusted model in TMPDIR (before
    2026-12-07). Ctrl-C (SIGINT) is handled the same way."""
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "NO_COLOR": "1", "TMPDIR": str(tmp)}
    argv = [sys.executable, "-m", "kerasaudit", "inspect", str(model_files["keras"])]
    # As from a terminal: SIGINT at its default. A suite started in the background by a
    # non-interactive shell (`cmd &`) ignores SIGINT, children inherit that, and Python then
    # installs no KeyboardInterrupt handler (found in a CI run started that way).
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=default_sigint) as proc:  # fmt: skip
        deadline = time.monotonic() + 120
        while not list(tmp.glob("kerasaudit-model-*/model.keras")):
            assert proc.poll() is None, "the load ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(getattr(signal, signame))
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == word
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_an_interrupt_swallowed_by_a_finaliser_is_raised_again(signame: str) -> None:
    """A signal landing in a ``__del__`` or weakref callback (importlib's module-lock callback
    while TensorFlow imports) had its exception printed as "ignored" and the command ran on to
    exit 0 (a CI failure, 2026-12-07). The interrupt must reach the code after the finaliser."""
    import signal
    import time

    code = (
        "import os, signal, time\n"
        "from kerasaudit.cli import signals\n"
        "signals.install()\n"
        "class Finaliser:\n"
        f"    def __del__(self): os.kill(os.getpid(), signal.{signame}); sum(range(10**6))\n"
        "Finaliser()\n"  # dropped at once: the handler runs inside __del__
        "print('after the finaliser', flush=True)\n"
        "try:\n"
        "    time.sleep(30)\n"
        "except KeyboardInterrupt as exc:\n"
        "    signals.handled()\n"
        "    print('raised again: ' + type(exc).__name__)\n"
    )
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, preexec_fn=default_sigint)  # fmt: skip
    assert "Exception ignored" in result.stderr  # the first raise was swallowed, as in CI
    want = "Terminated" if signame == "SIGTERM" else "KeyboardInterrupt"
    assert result.stdout.splitlines() == ["after the finaliser", f"raised again: {want}"]
    assert time.monotonic() - started < 20, "waited for the sleep to end"
