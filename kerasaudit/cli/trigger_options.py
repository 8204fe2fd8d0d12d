"""``--trigger`` / ``--target`` options, shared by evaluate, prune, sweep and gradcam."""

from __future__ import annotations

from typing import Annotated

import typer

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
