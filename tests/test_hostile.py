"""Red-team tests: every hostile file in ``hostile_files.CATALOGUE`` through the real CLI.

Each must end with exit 2 or 3 (never 4, never a crash), with one line on stderr naming what
was wrong, without running its payload, and leaving nothing in its temporary directory. A few
run as separate processes to measure time and memory the way a user's shell would see them.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import hostile_files as hf
import pytest
from typer.testing import CliRunner

from kerasaudit.cli.app import app
from kerasaudit.errors import ExitCode, UnsafeModelError

runner = CliRunner()


@pytest.fixture(scope="session")
def hostile_base(tmp_path_factory: pytest.TempPathFactory) -> hf.Base:
    return hf.build_base(tmp_path_factory.mktemp("hostile-base"))


@pytest.fixture()
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where kerasaudit's private directories go during the test; must end up empty."""
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, args, env=env or {})


@pytest.mark.parametrize("name", sorted(hf.CATALOGUE))
def test_hostile_file_is_refused_in_one_line_without_running_anything(
    name: str, hostile_base: hf.Base, tmp_path: Path, private_tmp: Path
) -> None:
    [item] = hf.build([name], hostile_base, tmp_path / "files")
    start = time.perf_counter()
    result = _invoke(["inspect", str(item.path), *item.args], item.env)
    elapsed = time.perf_counter() - start
    assert result.exit_code in item.expect, (result.exit_code, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert item.hint in lines[0], lines[0]
    assert result.stdout == ""
    if item.marker is not None:
        assert not item.marker.exists(), "the payload ran"
    assert list(private_tmp.iterdir()) == [], "temporary files were left behind"
    assert elapsed < 60, f"{elapsed:.1f} s"


def test_catalogue_covers_every_class_of_the_issue_and_the_readme() -> None:
    # The issue's measured classes, the README's "refuses" list and the Keras safe_mode CVEs.
    required = {
        "zip-bomb-many-members",
        "zip-path-traversal",
        "zip-crc-corrupt",
        "metadata-deeply-nested",
        "dense-1e8-no-weights",
        "convs-40000-filters-no-build-config",
        "hdf5-vlen-attribute-40mb",
        "polyglot-zip-over-lambda-h5",
        "spoofed-registered-name",
        "zip-npz-weights",
        "sandbox-memory-limit",
        "cve-2024-3660-lambda-keras",
        "cve-2025-1550-module",
        "cve-2025-8747-get-file",
        "cve-2025-9905-lambda-h5",
        "cve-2025-9906-lambda-load-model",
        "cve-2025-12058-vocabulary-file",
        "hdf5-dataset-shape-bomb",  # CVE-2026-0897
        "cve-2026-1462-tfsmlayer",
        "hdf5-external-link",
        "hdf5-soft-link",
        "hdf5-virtual-dataset",
        "hdf5-external-storage",
        "dense-1e8",
    }
    assert required <= set(hf.CATALOGUE)


def test_exit_4_is_kept_for_real_bugs(
    hostile_base: hf.Base, monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    # A bug (not a bad input) inside the sandboxed check must still say "internal error".
    import kerasaudit.safety

    def broken(config: Any) -> int:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(kerasaudit.safety, "declared_weights", broken)
    for env in ({}, {"KERASAUDIT_SANDBOX": "0"}):
        result = _invoke(["inspect", str(hostile_base.keras)], env)
        assert result.exit_code == ExitCode.INTERNAL, (env, result.stderr)
        assert "internal error" in result.stderr and "ZeroDivisionError" in result.stderr
    assert list(private_tmp.iterdir()) == []


def test_benign_model_loads_sandboxed_and_leaves_nothing(
    hostile_base: hf.Base, private_tmp: Path
) -> None:
    result = _invoke(["inspect", str(hostile_base.keras), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    assert '"conv2"' in result.stdout
    assert list(private_tmp.iterdir()) == []


def test_sandbox_can_be_turned_off_and_static_checks_still_refuse(
    hostile_base: hf.Base, tmp_path: Path, private_tmp: Path
) -> None:
    [bomb] = hf.build(["convs-40000-filters-no-build-config"], hostile_base, tmp_path)
    off = {"KERASAUDIT_SANDBOX": "0"}
    assert _invoke(["inspect", str(bomb.path)], off).exit_code == ExitCode.UNSAFE
    assert _invoke(["inspect", str(hostile_base.keras)], off).exit_code == 0
    # ... but then nothing bounds the load: a tiny memory budget is not applied.
    tight = {**off, "KERASAUDIT_SANDBOX_MEMORY": "16M"}
    assert _invoke(["inspect", str(hostile_base.keras)], tight).exit_code == 0
    assert list(private_tmp.iterdir()) == []


def test_bad_sandbox_settings_are_usage_errors(hostile_base: hf.Base) -> None:
    result = _invoke(["inspect", str(hostile_base.keras)], {"KERASAUDIT_SANDBOX_MEMORY": "lots"})
    assert result.exit_code == ExitCode.BAD_INPUT and "KERASAUDIT_SANDBOX_MEMORY" in result.stderr


def test_format_is_detected_once_on_the_private_copy(
    hostile_base: hf.Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    """A file swapped right after kerasaudit first looks at it: what is checked and what is
    loaded are both the swapped bytes (the copy), never a mix."""
    import shutil

    import kerasaudit.loading as loading

    marker = tmp_path / hf.MARKER_NAME
    lambda_keras, _ = hf.lambda_model_files(tmp_path, marker)
    path = tmp_path / "model.h5"
    shutil.copyfile(hostile_base.h5, path)
    real_check = loading.check_local_path

    def look_then_swap(target: Path) -> None:
        real_check(target)
        shutil.copyfile(lambda_keras, target)  # the attacker's move

    monkeypatch.setattr(loading, "check_local_path", look_then_swap)
    with pytest.raises(UnsafeModelError, match="Lambda"):
        loading.load_model(path)
    assert not marker.exists()
    monkeypatch.setattr(loading, "check_local_path", real_check)
    shutil.copyfile(hostile_base.keras, path)  # a .keras named .h5 loads as what it is
    assert str(loading.load_model(path).format) == "keras"
    assert list(private_tmp.iterdir()) == []


def test_unsafe_flag_still_loads_inside_the_sandbox(
    hostile_base: hf.Base, tmp_path: Path, private_tmp: Path
) -> None:
    [item] = hf.build(["zip-unexpected-member"], hostile_base, tmp_path)
    assert _invoke(["inspect", str(item.path)]).exit_code == ExitCode.UNSAFE
    unsafe = _invoke(["inspect", str(item.path), "--unsafe"])
    assert unsafe.exit_code == 0 and "safety finding" in unsafe.stderr
    bounded = _invoke(
        ["inspect", str(item.path), "--unsafe"], {"KERASAUDIT_SANDBOX_TIMEOUT": "0.01"}
    )
    assert bounded.exit_code == ExitCode.UNSAFE and "sandbox" in bounded.stderr
    assert list(private_tmp.iterdir()) == []


# --------------------------------------------------------------------------------------------
# As a user's shell sees it: separate processes, time and memory
# --------------------------------------------------------------------------------------------

STATIC = [
    "zip-bomb-many-members",
    "zip-path-traversal",
    "zip-crc-corrupt",
    "metadata-deeply-nested",
    "dense-1e8-no-weights",
    "convs-40000-filters-no-build-config",
    "hdf5-vlen-attribute-40mb",
    "hdf5-dataset-shape-bomb",
]


@pytest.mark.slow
def test_static_refusals_never_import_tensorflow(hostile_base: hf.Base, tmp_path: Path) -> None:
    """Refused before TensorFlow is imported: ~60 MB and about half a second of CPU, where a
    TensorFlow import alone takes ~600 MB and 4 s of CPU. (CPU time, because wall time on a
    shared CI machine measures its neighbours.)"""
    for item in hf.build(STATIC, hostile_base, tmp_path):
        measured = hf.measure(item)
        assert measured["exit"] in item.expect, measured
        assert measured["maxrss_mb"] < 300, measured
        assert measured["cpu_s"] < 3, measured
        assert measured["wall_s"] < 30, measured
        assert measured["leftovers"] == [] and not measured["marker"], measured
        assert measured["stderr_lines"] == 1, measured


@pytest.mark.slow
def test_sandbox_kill_costs_the_user_nothing(hostile_base: hf.Base, tmp_path: Path) -> None:
    """A bomb the checks miss (stood in for by a tight budget): the canary dies and the command
    refuses in one line, within 1 GB (TensorFlow's import included)."""
    for name in ("sandbox-memory-limit", "sandbox-cpu-limit"):
        [item] = hf.build([name], hostile_base, tmp_path)
        measured = hf.measure(item)
        assert measured["exit"] == ExitCode.UNSAFE, measured
        assert "sandbox" in measured["message"], measured
        assert measured["maxrss_mb"] < 1024, measured
        assert measured["cpu_s"] < 15, measured  # TensorFlow's import is ~4 s of it
        assert measured["wall_s"] < 60, measured
        assert measured["leftovers"] == [], measured


@pytest.mark.slow
def test_benign_model_in_a_fresh_process_uses_the_fork_path(hostile_base: hf.Base) -> None:
    item = hf.Hostile("benign", hostile_base.keras, frozenset({0}))
    measured = hf.measure(item)
    assert measured["exit"] == 0, measured
    assert measured["maxrss_mb"] < 1024 and measured["leftovers"] == [], measured


def test_zygote_is_used_once_tensorflow_has_run(keras_module: Any) -> None:
    from kerasaudit import sandbox

    keras_module.ops.convert_to_tensor([1.0])  # this test process has run TensorFlow
    assert not sandbox.tensorflow_is_fork_safe()
    assert os.environ.get("KERASAUDIT_SANDBOX", "1") != "0"
