"""``--device`` and ``--mixed-precision``, shared by every command that runs the model."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


DeviceOpt = Annotated[
    Device,
    typer.Option(
        "--device",
        help="Where to run: auto (every GPU when present, else the CPU), cpu, or gpu.",
    ),
]
MixedPrecisionOpt = Annotated[
    bool,
    typer.Option(
        "--mixed-precision",
        help="Run layers in float16 (GPU) / bfloat16 (CPU); statistics stay float32/float64.",
    ),
]


def strategy_for(device: Device) -> Any:
    """The tf.distribute strategy for ``--device`` (imports TensorFlow)."""
    from kerasaudit import _tf

    return _tf.configure_device(device.value)
