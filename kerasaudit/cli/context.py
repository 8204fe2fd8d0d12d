"""Load the model and open its data the same way in every command (TensorFlow loads lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kerasaudit.cli.common import Consoles
from kerasaudit.cli.data_options import DataArgs

if TYPE_CHECKING:
    import numpy as np

    from kerasaudit.cli.trigger_options import TriggerRequest
    from kerasaudit.data import Dataset
    from kerasaudit.evaluation import ClassifierIO
    from kerasaudit.loading import LoadedModel
    from kerasaudit.triggers import AnyTrigger, TriggerSpec


def require_paths(*named: tuple[str, Path | None]) -> None:
    """Fail fast (before TensorFlow is imported) on input paths that do not exist."""
    from kerasaudit.errors import BadInputError

    for option, path in named:
        if path is not None and not path.exists():
            raise BadInputError(f"{option} {path} does not exist")


def load(
    consoles: Consoles,
    model: Path,
    unsafe: bool,
    custom_objects: Path | None,
    *,
    as_images: bool = True,
    output: str | None = None,
) -> LoadedModel:
    """``load_model`` under the "loading model" spinner. ``as_images``: a model that does not
    take ``(H, W, C)`` images, or has several outputs, is seen through a view
    (:mod:`kerasaudit.model_view`; ``output``: the output to audit, by name; ``inspect`` shows
    the file's own model)."""
    require_paths(("model", model), ("--custom-objects", custom_objects))
    from dataclasses import replace

    from kerasaudit.loading import load_model
    from kerasaudit.model_view import view

    with consoles.err.status("loading model"):
        loaded = load_model(model, unsafe=unsafe, custom_objects_file=custom_objects)
    return replace(loaded, model=view(loaded.model, output)) if as_images else loaded


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


def scaled_for(consoles: Consoles, loaded: LoadedModel, data_args: DataArgs) -> DataArgs:
    """``data_args``, but ``--scale auto`` reads the data unscaled for a model that rescales its
    own input (a leading ``Rescaling(1/255)``; :mod:`kerasaudit.input_space`), and says so."""
    from dataclasses import replace

    from kerasaudit.input_space import auto_scale

    scale, note = auto_scale(loaded.model, data_args.scale)
    if note is None:
        return data_args
    consoles.info(f"note: {note}")
    return replace(data_args, scale=scale)


def open_inputs(
    consoles: Consoles,
    loaded: LoadedModel,
    data_args: DataArgs,
    data: Path,
    eval_data: Path | None = None,
    trigger: TriggerRequest | None = None,
) -> Inputs:
    """Open ``data`` (and ``eval_data``) for the model's input shape and output size; fit a
    ``--trigger`` to the data, or read the ``--trigger-data`` images (same data options, no
    ``--limit``). ``--scale auto`` reads a model that rescales its own input (a leading
    ``Rescaling(1/255)``) unscaled, and says so; a model that gets ``--data`` right barely more
    often than chance is warned about (:mod:`kerasaudit.input_space`)."""
    from kerasaudit.data import open_data
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.input_space import chance_warning
    from kerasaudit.triggers import TriggerData

    io = classifier_io(loaded.model)
    data_args = scaled_for(consoles, loaded, data_args)

    def open_for_model(path: Path) -> Dataset:
        return open_data(data_args.spec_for(path), io.input_shape, io.outputs)

    dataset = open_for_model(data)
    warning = chance_warning(loaded.model, dataset, io.num_classes)
    if warning is not None:
        consoles.info(f"warning: {warning}")
    fitted: AnyTrigger | None = None
    if trigger is not None and trigger.spec is not None:
        fitted = trigger.spec.for_data(dataset.info)
    elif trigger is not None and trigger.data is not None:
        x, y = _trigger_images(io, data_args, trigger.data)
        fitted = TriggerData.from_arrays(str(trigger.data), x, y, trigger.target)
    return Inputs(
        dataset,
        None if eval_data is None else open_for_model(eval_data),
        fitted,
    )


def _trigger_images(
    io: ClassifierIO, data_args: DataArgs, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images that carry a trigger, read with the --data options for the model's ``io`` (no
    --limit; at most ``MAX_TRIGGER_DATA``)."""
    from dataclasses import replace

    from kerasaudit.data import open_data
    from kerasaudit.triggers import MAX_TRIGGER_DATA

    images = open_data(replace(data_args.spec_for(path), limit=None), io.input_shape, io.outputs)
    return images.take_array(min(images.info.count, MAX_TRIGGER_DATA))


def open_extra_triggers(
    loaded: LoadedModel,
    data_args: DataArgs,
    dataset: Dataset,
    specs: Sequence[TriggerSpec],
    paths: Sequence[Path],
) -> list[AnyTrigger]:
    """``prune --also-unlearn`` triggers fitted to ``dataset`` and ``--also-unlearn-data``
    images. Unlearning keeps a stamped image's true label, so the images need theirs: a file
    without labels, or whose labels are all one class (a poisoned set's), is refused."""
    import numpy as np

    from kerasaudit.errors import BadInputError
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.triggers import TriggerData

    out: list[AnyTrigger] = [spec.for_data(dataset.info) for spec in specs]
    io = classifier_io(loaded.model)
    for path in paths:
        x, y = _trigger_images(io, data_args, path)
        if y is None:
            raise BadInputError(
                f"--also-unlearn-data {path} has no labels: unlearning keeps each image's true "
                "class, so the file needs them"
            )
        if len(y) > 1 and np.all(y == y[0]):
            raise BadInputError(
                f"--also-unlearn-data {path}: every label is {int(y[0])} — poisoned labels, not "
                "the images' true classes, which unlearning needs"
            )
        out.append(TriggerData.from_arrays(str(path), x, y, None))
    return out
