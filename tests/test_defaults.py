"""The commands' option defaults are the library's: `reverse`, `defend` and `audit` run the same
trigger recovery and `defend` the same removal as ``ReverseConfig()`` / ``DefenceSettings()``
(what `ka.defend`, `audit --fix` and the zoo's removal.py use). A default changed in one place
and not the other would make the CLI and the measured numbers disagree."""

from __future__ import annotations

import inspect
from typing import Any

from kerasaudit.cli import audit_cmd, defend_cmd, reverse_cmd
from kerasaudit.stages.defend import DefenceSettings
from kerasaudit.stages.reverse import ReverseConfig

REVERSE_OPTIONS = {
    "steps": "steps",
    "opt_batch": "batch_size",
    "images": "images",
    "label_batch": "label_batch",
    "value_range": "value_range",
    "seed": "seed",
    "complete": "complete",
    "restarts": "restarts",
    "baseline": "baseline",
}


def defaults(command: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(command).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_reverse_and_defend_recover_triggers_with_reverse_configs_defaults() -> None:
    library = ReverseConfig()
    for command in (reverse_cmd.reverse, defend_cmd.defend):
        cli = defaults(command)
        for option, field in REVERSE_OPTIONS.items():
            assert cli[option] == getattr(library, field), (command.__name__, option)
    # audit exposes fewer options; those it has agree too
    cli = defaults(audit_cmd.audit)
    for option in ("steps", "images", "seed", "baseline"):
        assert cli[option] == getattr(library, REVERSE_OPTIONS[option]), option


def test_defend_removes_with_defence_settings_defaults() -> None:
    library = DefenceSettings()
    cli = defaults(defend_cmd.defend)
    assert cli["ratio"] == library.ratio
    assert cli["fine_tune_epochs"] == library.fine_tuning.epochs
    assert cli["final_epochs"] == library.final_epochs
    assert cli["max_acc_drop"] / 100 == library.max_acc_drop
    assert cli["unlearn_fraction"] is None  # None: the library's
    assert cli["rounds"] == library.rounds
    assert cli["searches"] == library.searches
    assert library.fine_tuning.unlearn and library.fine_tuning.epochs > 0
