"""Load the model and open its data the same way in every command (TensorFlow loads lazily)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kerasaudit.cli.common import Consoles
from kerasaudit.cli.data_options import DataArgs

if TYPE_CHECKING:
    from kerasaudit.cli.trigger_options import TriggerRequest
    from kerasaudit.data import Dataset
    from kerasaudit.loading import LoadedModel
    from kerasaudit.triggers import AnyTrigger


def require_paths(*named: tuple[str, Path | None]) -> None:
    """Fail fast (before TensorFlow is imported) on input paths that do not exist."""
    from kerasaudit.errors import BadInputError

    for option, path in named:
        if path is not None and not path.exists():
            raise BadInputError(f"{option} {path} does not exist")


def load(consoles: Consoles, model: Path, unsafe: bool, custom_objects: Path | None) -> LoadedModel:
    """``load_model`` under the "loading model" spinner."""
    require_paths(("model", model), ("--custom-objects", custom_objects))
    from kerasaudit.loading import load_model

    with consoles.err.status("loading model"):
        return load_model(model, unsafe=unsafe, custom_objects_file=custom_objects)


def warn_if_unsafe(consoles: Consoles, loaded: LoadedModel) -> None:
    if loaded.unsafe and loaded.safety.findings:
        consoles.info(
            f"warning: loaded despite {len(loaded.safety.findings)} safety finding(s) (--unsafe)"
        )


@dataclass(frozen=True)
class Inputs:
    """What a classifier command runs on, checked against the model."""

    dataset: Dataset  # --data
    held_out: Dataset | None  # --eval-data
    trigger: AnyTrigger | None  # --trigger fitted to --data, or the --trigger-data images


def open_inputs(
    loaded: LoadedModel,
    data_args: DataArgs,
    data: Path,
    eval_data: Path | None = None,
    trigger: TriggerRequest | None = None,
) -> Inputs:
    """Open ``data`` (and ``eval_data``) for the model's input shape and output size; fit a
    ``--trigger`` to the data, or read the ``--trigger-data`` images (same data options, no
    ``--limit``)."""
    from dataclasses import replace

    from kerasaudit.data import open_data
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.triggers import MAX_TRIGGER_DATA, TriggerData

    io = classifier_io(loaded.model)

    def open_for_model(path: Path) -> Dataset:
        return open_data(data_args.spec_for(path), io.input_shape, io.outputs)

    dataset = open_for_model(data)
    fitted: AnyTrigger | None = None
    if trigger is not None and trigger.spec is not None:
        fitted = trigger.spec.for_data(dataset.info)
    elif trigger is not None and trigger.data is not None:
        spec = replace(data_args.spec_for(trigger.data), limit=None)
        images = open_data(spec, io.input_shape, io.outputs)
        x, y = images.take_array(min(images.info.count, MAX_TRIGGER_DATA))
        fitted = TriggerData.from_arrays(str(trigger.data), x, y, trigger.target)
    return Inputs(
        dataset,
        None if eval_data is None else open_for_model(eval_data),
        fitted,
    )
