"""``--data`` and its options, shared by every command that reads data (scan, prune, evaluate…).

Declare the parameters with these ``Annotated`` types and build the library's ``DataSpec`` with
:meth:`DataArgs.spec_for`; nothing here imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kerasaudit.data import DataSpec

DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="Data: .npz, .npy, HDF5, or an image folder (class sub-folders, or flat).",
        show_default=False,
    ),
]
XKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--x-key", help="Array name of the inputs in .npz / HDF5 (default: x, x_test, …)."
    ),
]
YKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--y-key", help="Array name of the labels in .npz / HDF5 (default: y, y_test, …)."
    ),
]
ScaleOpt = Annotated[
    str,
    typer.Option(
        "--scale",
        help="Multiply inputs by this: 'auto' (uint8 → 1/255, else none), 'none', 0.00392, 1/255.",
    ),
]
ChannelsFirstOpt = Annotated[
    bool | None,
    typer.Option(
        "--channels-first/--channels-last",
        help="How the data is stored (default: detected from the model's input shape).",
        show_default=False,
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Use only the first N examples.")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
ResizeOpt = Annotated[
    bool,
    typer.Option("--resize", help="Resize images to the model's input size instead of refusing."),
]

DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class DataArgs:
    """The data options but the path, in the order every command declares them, so that
    ``--data`` and ``--eval-data`` get the same :class:`~kerasaudit.data.DataSpec`."""

    x_key: str | None = None
    y_key: str | None = None
    scale: str = "auto"
    channels_first: bool | None = None
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    resize: bool = False

    def spec_for(self, path: Path) -> DataSpec:
        from kerasaudit.data import DataSpec

        return DataSpec(path=path, **asdict(self))
