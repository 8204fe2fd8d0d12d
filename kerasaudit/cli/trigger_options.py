"""``--trigger`` / ``--trigger-data`` / ``--target`` options, shared by every command that
measures or removes a known trigger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kerasaudit.triggers import TriggerSpec

TriggerOpt = Annotated[
    str | None,
    typer.Option(
        "--trigger",
        "-t",
        help="Trigger: 'patch:size=4,pos=br,value=1' (pos br|bl|tr|tl|X,Y; pattern=checker), "
        "'image:T.png,x=X,y=Y' (pasted with its alpha), 'blend:T.png,alpha=0.1', or a "
        "trigger file T.npz written by `reverse`. Values are in the model's input space.",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    int | None,
    typer.Option(
        "--target",
        help="The label the trigger forces (default: the trigger file's target).",
        show_default=False,
    ),
]
TriggerDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--trigger-data",
        help="Images that carry the trigger (.npz/.npy/HDF5/folder, read with the --data "
        "options; labels, when present, are their true classes), for triggers no spec can "
        "stamp: blends, sinusoidal signals, warps, poisoned samples found in an incident. "
        "Needs --target. Instead of --trigger.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class TriggerRequest:
    """``--trigger`` (parsed) or ``--trigger-data`` (a path), checked before anything loads."""

    spec: TriggerSpec | None
    data: Path | None
    target: int | None


def trigger_request(
    trigger: str | None, trigger_data: Path | None, target: int | None
) -> TriggerRequest | None:
    """Parse and check the trigger options (fast: no TensorFlow); None when neither is given."""
    from kerasaudit.errors import BadInputError
    from kerasaudit.triggers import parse_trigger

    if trigger is not None and trigger_data is not None:
        raise BadInputError("give --trigger or --trigger-data, not both")
    if trigger_data is not None:
        if not trigger_data.exists():
            raise BadInputError(f"--trigger-data {trigger_data} does not exist")
        if target is None:
            raise BadInputError("--trigger-data needs --target K (the label the backdoor forces)")
        return TriggerRequest(None, trigger_data, target)
    if trigger is None:
        return None
    return TriggerRequest(parse_trigger(trigger), None, target)


def check_max_asr(max_asr: float | None) -> None:
    """``--max-asr`` is a percentage (checked before anything loads)."""
    from kerasaudit.errors import BadInputError

    if max_asr is not None and not 0.0 <= max_asr <= 100.0:
        raise BadInputError(f"--max-asr is a percentage between 0 and 100, got {max_asr:g}")
