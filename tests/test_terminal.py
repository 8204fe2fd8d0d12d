"""Output a person can read at 80 columns: every command's table and help, rendered through
the real CLI with COLUMNS=80, keeps identifiers whole (folded, never cut with "…") and no line
is wider than 80 characters; stderr summaries are single lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_reverse import TRIGGER, write_stripe_files
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()
ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory, keras_module: Any) -> dict[str, Path]:
    return write_stripe_files(tmp_path_factory.mktemp("terminal"), keras_module)


def _check(result: Any, names: list[str]) -> None:
    assert result.exit_code in (0, 1), result.output
    lines = result.stdout.splitlines()
    assert lines, "no report on stdout"
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide[:3]
    assert "…" not in result.stdout
    for name in names:
        assert name in result.stdout, name
    for line in result.stderr.strip().splitlines():
        # one-line summaries on stderr: nothing folded onto a continuation line
        assert not line.startswith((" ", "%")), line


@pytest.mark.parametrize(
    ("command", "extra", "names"),
    [
        ("inspect", [], ["conv1"]),
        ("scan", ["-d", "DATA"], ["conv1"]),
        ("scan", ["-d", "DATA", "-t", TRIGGER, "--target", "0"], ["conv1"]),
        ("evaluate", ["-d", "DATA", "-t", TRIGGER, "--target", "0"], ["accuracy"]),
        ("prune", ["-d", "DATA", "-t", TRIGGER, "--target", "0", "--ratio", "0.2"], ["conv1"]),
        ("reverse", ["-d", "DATA", "--steps", "60", "--images", "64", "--no-complete"], []),
    ],
)
def test_command_output_reads_at_80_columns(
    stripes: dict[str, Path], command: str, extra: list[str], names: list[str]
) -> None:
    args = [command, str(stripes["backdoored"])] + [
        str(stripes["data"]) if a == "DATA" else a for a in extra
    ]
    _check(runner.invoke(app, args, env=ENV), names)


def test_reverse_table_keeps_all_seven_columns_at_80(stripes: dict[str, Path]) -> None:
    """Seven columns do not fit 80 characters with each index beside its value: below 100
    columns the index goes under it, and no column is dropped or cut off."""
    args = ["reverse", str(stripes["backdoored"]), "-d", str(stripes["data"]), "--steps", "60",
            "--images", "64", "--no-complete"]  # fmt: skip
    result = runner.invoke(app, args, env=ENV)
    _check(result, [])
    header = next(line for line in result.stdout.splitlines() if "label" in line and "┃" in line)
    for column in ("label", "NC mask ℓ1", "additive ℓ2", "warp px", "margin", "ℓ∞ excess",
                   "flagged"):  # fmt: skip
        assert column in header, (column, header)


@pytest.mark.parametrize(
    "command",
    ["audit", "inspect", "scan", "evaluate", "prune", "sweep", "reverse", "defend", "gradcam",
     "report", "batch", "merge-stats", "baseline"],
)  # fmt: skip
def test_help_reads_at_80_columns(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env=ENV)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "<bool>" not in result.stdout and "list[str]" not in result.stdout
    assert "╭" not in result.stdout  # plain help, no framework panels


def test_usage_error_is_one_line_and_exit_2() -> None:
    result = runner.invoke(app, ["prune", "model.keras"], env=ENV)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "--data" in result.stderr
