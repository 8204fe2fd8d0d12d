"""Writing models: atomically, never over an existing file without --force."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from kerasaudit._io import check_output_path, write_atomic
from kerasaudit.errors import BadInputError
from kerasaudit.safety import ModelFormat


class SaveFormat(StrEnum):
    AUTO = "auto"  # the input's format (a SavedModel input is written as .keras)
    KERAS = "keras"
    H5 = "h5"


def resolve_save_format(requested: SaveFormat, source: ModelFormat, output: Path) -> SaveFormat:
    if requested is SaveFormat.AUTO:
        chosen = SaveFormat.H5 if source is ModelFormat.H5 else SaveFormat.KERAS
    else:
        chosen = requested
    suffix = output.suffix.lower()
    expected = (".h5", ".hdf5") if chosen is SaveFormat.H5 else (".keras",)
    if suffix not in expected:
        # Keras picks the writer by extension; a mismatch would silently write another format.
        raise BadInputError(
            f"output {output} must end in {' or '.join(expected)} for the {chosen} format "
            f"(input format: {source}; use --save-format to choose)"
        )
    return chosen


def check_model_output(path: Path, *, force: bool) -> None:
    check_output_path(path, force=force)


def save_model(model: Any, path: Path, fmt: SaveFormat, *, force: bool) -> None:
    """Write ``model`` to ``path`` (format already resolved) via a temporary file. A view of
    a model (or a copy of one) is written as the file's model with the view's weights: the
    input and outputs its file had (:mod:`kerasaudit.model_view`)."""
    from kerasaudit.model_view import file_model

    model = file_model(model)

    def write(tmp: Path) -> None:
        model.save(tmp)  # the temporary path keeps the output's suffix

    if fmt is SaveFormat.AUTO:
        raise ValueError("resolve the save format first")
    write_atomic(path, write, force=force)
