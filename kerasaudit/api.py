"""The Python API: the functions the CLI runs, taking paths, arrays or loaded objects.

Every function accepts a model as a path (loaded safely, exactly as the CLI does: static checks
and a sandboxed canary load, nothing in the file executed unless ``unsafe=True``), as the
:class:`~kerasaudit.loading.LoadedModel` that :func:`load_model` returns, or as a Keras model
already in memory (which you trust); and data as a path (``.npz``, ``.npy``, HDF5 or an image
folder), a :class:`~kerasaudit.data.Dataset` from :func:`load_data`, an array of inputs, or an
``(x, y)`` pair of arrays. Triggers are the CLI's specs (``"patch:size=4,pos=br,value=1"``, a
trigger file written by ``reverse``) or objects from :func:`make_trigger`. Results are the
typed, frozen dataclasses of each stage; ``to_dict()`` gives the JSON the CLI prints.

>>> import kerasaudit as ka
>>> model = ka.load_model("sample_models/fmnist_badnets.keras")
>>> result = ka.audit(model, "sample_models/fmnist_val.npz")  # doctest: +SKIP
>>> result.backdoor, result.targets  # doctest: +SKIP
(True, (0,))

Errors are the CLI's: :class:`~kerasaudit.errors.BadInputError` (exit 2),
:class:`~kerasaudit.errors.UnsafeModelError` (exit 3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from kerasaudit.data import Dataset
    from kerasaudit.evaluation import EvaluationResult
    from kerasaudit.inventory import ModelInventory
    from kerasaudit.loading import LoadedModel
    from kerasaudit.stages.audit import AuditResult
    from kerasaudit.stages.baseline import BaselineBuild
    from kerasaudit.stages.defend import DefenceSettings, DefendResult
    from kerasaudit.stages.gradcam import GradcamResult
    from kerasaudit.stages.prune import PruneResult
    from kerasaudit.stages.reverse import ReverseConfig, ReverseResult
    from kerasaudit.stages.scan import ScanResult
    from kerasaudit.stages.sweep import SweepResult
    from kerasaudit.triggers import AnyTrigger

PathLike: TypeAlias = str | os.PathLike[str]
ModelLike: TypeAlias = "PathLike | LoadedModel | Any"
DataLike: TypeAlias = "PathLike | Dataset | np.ndarray | tuple[np.ndarray, np.ndarray | None]"
TriggerLike: TypeAlias = "str | AnyTrigger"

__all__ = [
    "audit",
    "build_baseline",
    "defend",
    "evaluate",
    "gradcam",
    "inspect",
    "load_data",
    "load_model",
    "make_trigger",
    "prune",
    "reverse",
    "save_baseline",
    "save_model",
    "scan",
    "sweep",
]


# --- inputs --------------------------------------------------------------------------------


def load_model(
    path: PathLike,
    *,
    unsafe: bool = False,
    custom_objects: PathLike | None = None,
    output: str | None = None,
) -> LoadedModel:
    """Load an untrusted model file as ``kerasaudit`` does (see the README, "Untrusted
    models"). ``unsafe=True`` loads a refused file anyway; ``custom_objects`` is a ``.py`` file
    defining the model's custom layers (trusted: it is imported); ``output``: for a model with
    several outputs, the one every function audits (the CLI's ``--model-output``; by default
    the only one with two or more scores)."""
    from kerasaudit.loading import load_model as _load
    from kerasaudit.model_view import output_index

    loaded = _load(
        Path(path),
        unsafe=unsafe,
        custom_objects_file=None if custom_objects is None else Path(custom_objects),
    )
    if output is None:
        return loaded
    output_index(loaded.model, output)  # an unknown name fails here, as --model-output does
    return replace(loaded, output=output)


def load_data(
    data: DataLike,
    model: ModelLike,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    scale: str = "auto",
    channels_first: bool | None = None,
    limit: int | None = None,
    batch_size: int = 128,
    resize: bool = False,
) -> Dataset:
    """Open data for ``model``: checked against its input shape and output size, streamed in
    batches (files) or served from memory (arrays; ``limit`` and the keys do not apply).
    ``scale``: ``"auto"`` (uint8 → 1/255, unless the model rescales its own input: then
    none, as the CLI does), ``"none"``, a number or ``"1/255"``."""
    from kerasaudit.data import Dataset, DataSpec, data_from_arrays, open_data
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.input_space import auto_scale

    if isinstance(data, Dataset):
        return data
    keras_model = _keras(model)
    io = classifier_io(keras_model)
    scale, _ = auto_scale(keras_model, scale)
    if isinstance(data, str | os.PathLike):
        spec = DataSpec(
            Path(data), x_key=x_key, y_key=y_key, scale=scale, channels_first=channels_first,
            limit=limit, batch_size=batch_size, resize=resize,
        )  # fmt: skip
        return open_data(spec, io.input_shape, io.outputs)
    x, y = data if isinstance(data, tuple) else (data, None)
    return data_from_arrays(
        np.asarray(x), None if y is None else np.asarray(y), io.input_shape, io.outputs,
        scale=scale, channels_first=channels_first, batch_size=batch_size, resize=resize,
    )  # fmt: skip


def make_trigger(spec: TriggerLike, data: Dataset) -> AnyTrigger:
    """A trigger for ``data`` as served: ``spec`` is a CLI trigger spec
    (``"patch:size=4,pos=br,value=1"``, ``"blend:T.png,alpha=0.1"``) or a trigger file written
    by ``reverse``; a trigger object is returned as it is."""
    from kerasaudit.triggers import parse_trigger

    if not isinstance(spec, str):
        return spec
    return parse_trigger(spec).for_data(data.info)


def save_model(model: ModelLike, path: PathLike, *, force: bool = False) -> None:
    """Write a model atomically (``.keras`` or ``.h5`` by the extension); an existing file is
    only replaced with ``force=True``."""
    from kerasaudit.saving import SaveFormat
    from kerasaudit.saving import save_model as _save

    out = Path(path)
    fmt = SaveFormat.H5 if out.suffix.lower() in (".h5", ".hdf5") else SaveFormat.KERAS
    if fmt is SaveFormat.KERAS and out.suffix.lower() != ".keras":
        from kerasaudit.errors import BadInputError

        raise BadInputError(f"output {out} must end in .keras, .h5 or .hdf5")
    _save(_keras(model), out, fmt, force=force)


# --- stages --------------------------------------------------------------------------------


def inspect(model: PathLike | LoadedModel) -> ModelInventory:
    """Format, saving Keras version, inputs/outputs, parameters and every auditable layer."""
    from kerasaudit.inventory import build_inventory

    return build_inventory(_loaded(model))


def scan(model: ModelLike, data: DataLike, **options: Any) -> ScanResult:
    """Clean per-channel ℓ1/ℓ2/ℓ∞ statistics of every conv layer in one fused pass, with
    robust per-layer anomaly scores (leads, not a verdict). ``options``: those of
    :func:`kerasaudit.stages.scan.scan` (``layers``, ``threshold``, ``batch_size`` …)."""
    from kerasaudit.stages.scan import scan as _scan

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    return _scan(keras_model, dataset, source=dataset.info.path, **options)


def evaluate(
    model: ModelLike,
    data: DataLike,
    trigger: TriggerLike | None = None,
    target: int | None = None,
    *,
    max_asr: float | None = None,
) -> EvaluationResult:
    """Clean accuracy and, with a trigger, attack success rate and robust accuracy."""
    from kerasaudit.evaluation import evaluate as _evaluate

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    fitted = None if trigger is None else make_trigger(trigger, dataset)
    return _evaluate(keras_model, dataset, fitted, target, max_asr)


def reverse(
    model: ModelLike,
    data: DataLike,
    *,
    labels: Sequence[int] | None = None,
    config: ReverseConfig | None = None,
) -> ReverseResult:
    """Trigger recovery for every label (Neural Cleanse, additive, warp, margin, untargeted) and
    the calibrated verdict (``result.verdict``). Minutes on a CPU."""
    from kerasaudit.stages.reverse import ReverseConfig, reverse_engineer

    keras_model = _keras(model)
    return reverse_engineer(
        keras_model, load_data(data, keras_model), labels=labels, config=config or ReverseConfig()
    )


def build_baseline(
    reports: Sequence[ReverseResult | PathLike],
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str = "custom",
    references: Sequence[PathLike] = (),
    transfer: float = 0.2,
) -> BaselineBuild:
    """A task baseline (what ``kerasaudit baseline`` builds) from :func:`reverse` results — or
    their JSON reports — of models known to be clean, and the task's labelled images ``x``,
    ``y`` (any pixel scale: the fingerprint is standardised). ``references``: clean model
    files of the task for the reference-model veto (``--reference``; ``transfer`` its share).
    :func:`save_baseline` writes ``result.task`` for ``--baseline FILE`` (with the references
    copied beside it); ``result.left_out`` is the leave-one-out check (see
    :mod:`kerasaudit.stages.baseline`)."""
    from kerasaudit.stages.baseline import CleanReport, build, read_report
    from kerasaudit.stages.reverse import ReverseResult

    parsed = []
    for i, report in enumerate(reports):
        if isinstance(report, ReverseResult):
            shape = tuple(int(d) for d in report.data.shape)
            parsed.append(CleanReport(f"<result {i}>", str(report.model), report.evidence(),
                                      report.num_classes, shape))  # fmt: skip
        else:
            parsed.append(read_report(Path(report)))
    return build(
        parsed,
        np.asarray(x),
        np.asarray(y),
        name=name,
        data_path="<arrays>",
        references=tuple(str(Path(r)) for r in references),
        transfer=transfer,
    )


def save_baseline(built: BaselineBuild, path: PathLike, *, force: bool = False) -> None:
    """Write a :func:`build_baseline` result to ``path`` (atomically; never over a file without
    ``force``), its reference models checked (safe load, the task's classes and image shape)
    and copied beside it, as ``kerasaudit baseline -o PATH`` does."""
    from kerasaudit._io import check_output_path
    from kerasaudit.baselines import save
    from kerasaudit.stages.baseline import check_references, copy_references

    out = Path(path)
    check_output_path(out, force=force)
    task = built.task
    sources = [Path(r) for r in task.baseline.references]
    copies = check_references(sources, out, task.num_classes, task.image_shape, force=force)
    copy_references(sources, copies, force=force)
    baseline = replace(task.baseline, references=copies)
    save(replace(task, baseline=baseline), out, force=force)


def audit(
    model: ModelLike,
    data: DataLike,
    *,
    trigger: TriggerLike | None = None,
    target: int | None = None,
    max_asr: float = 0.05,
    config: ReverseConfig | None = None,
) -> AuditResult:
    """Does the model carry a backdoor? Inventory, clean statistics, trigger recovery (or the
    known ``trigger``), the verdict, and the channels each trigger drives. ``result.backdoor``
    is what the CLI's exit code 1 means. To remove what it finds, use :func:`defend`."""
    from kerasaudit.stages.audit import AuditSettings
    from kerasaudit.stages.audit import audit as _audit
    from kerasaudit.stages.reverse import ReverseConfig

    loaded = _loaded(model)
    loaded = replace(loaded, model=_keras(loaded))
    dataset = load_data(data, loaded)
    known = None if trigger is None else make_trigger(trigger, dataset)
    settings = AuditSettings(reverse=config or ReverseConfig(), max_asr=max_asr)
    _, result = _audit(loaded, dataset, settings=settings, known=known, known_target=target)
    return result


def prune(
    model: ModelLike,
    data: DataLike,
    *,
    ratio: float | str,
    criterion: str = "linf-trigger",
    trigger: TriggerLike | None = None,
    target: int | None = None,
    layers: Sequence[str] = (),
    fine_tune_epochs: int = 0,
    unlearn: bool = False,
    also_unlearn: Sequence[TriggerLike] = (),
    rank_also: bool = True,
    eval_data: DataLike | None = None,
) -> tuple[Any, PruneResult]:
    """Zero the kernels (and biases, and the following BatchNorm) of the channels ranked
    first by ``criterion``; optionally fine-tune (with ``unlearn``, on triggered images labelled
    with their true class; ``also_unlearn``: further known triggers, e.g. a second backdoor's,
    unlearnt with ``trigger`` and measured like it — towards the label the original model sends
    them to — and, with ``rank_also`` and ``linf-trigger``, ranking the channels with it).
    Returns (the pruned copy, what was done); ``model`` is unchanged."""
    from kerasaudit.finetune import FineTuneSettings
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.prune import prune as _prune

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    fitted = None if trigger is None else make_trigger(trigger, dataset)
    extra = [make_trigger(t, dataset) for t in also_unlearn]
    if extra and not (unlearn and fine_tune_epochs and fitted is not None):
        from kerasaudit.errors import BadInputError

        raise BadInputError("also_unlearn needs trigger, unlearn=True and fine_tune_epochs")
    pruned, result = _prune(
        keras_model,
        dataset,
        criterion=Criterion(criterion),
        ratio=ratio,
        layers=layers,
        trigger=fitted,
        target=target,
        eval_dataset=None if eval_data is None else load_data(eval_data, keras_model),
        fine_tuning=FineTuneSettings(epochs=fine_tune_epochs, unlearn=unlearn),
        known_also=extra,
        rank_known=rank_also,
    )
    return _as_loaded(pruned), result


def sweep(
    model: ModelLike,
    data: DataLike,
    *,
    trigger: TriggerLike,
    target: int | None = None,
    criteria: Sequence[str] = ("linf-trigger",),
    layers: Sequence[str] = (),
    ratios: Sequence[float] | None = None,
) -> SweepResult:
    """Accuracy, ASR and robust accuracy against the pruning ratio, per criterion and layer,
    with a recommendation."""
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.sweep import DEFAULT_RATIOS
    from kerasaudit.stages.sweep import sweep as _sweep

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    return _sweep(
        keras_model,
        dataset,
        trigger=make_trigger(trigger, dataset),
        target=target,
        criteria=[Criterion(c) for c in criteria],
        layers=layers,
        ratios=DEFAULT_RATIOS if ratios is None else tuple(ratios),
    )


def defend(
    model: ModelLike,
    data: DataLike,
    *,
    eval_data: DataLike | None = None,
    labels: Sequence[int] | None = None,
    config: ReverseConfig | None = None,
    settings: DefenceSettings | None = None,
    eval_trigger: TriggerLike | None = None,
    eval_target: int | None = None,
) -> tuple[Any | None, DefendResult]:
    """Recover the trigger, prune the channels it drives, fine-tune while unlearning it.
    Returns (the defended copy, or None when nothing was flagged; the result).
    ``eval_trigger`` (a spec, a trigger file, a trigger object such as ``TriggerData``) with
    ``eval_target``: a known trigger that only *measures* the defence (the CLI's
    ``--eval-trigger`` / ``--eval-trigger-data``), on ``eval_data`` (else ``data``)."""
    from kerasaudit.stages.defend import defend as _defend

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    held_out = None if eval_data is None else load_data(eval_data, keras_model)
    known = None
    if eval_trigger is not None:
        known = make_trigger(eval_trigger, held_out or dataset)
    defended, result = _defend(
        keras_model,
        dataset,
        eval_dataset=held_out,
        labels=labels,
        reverse_config=config,
        settings=settings,
        known_trigger=known,
        known_target=eval_target,
    )
    return (None if defended is None else _as_loaded(defended)), result


def gradcam(
    model: ModelLike,
    data: DataLike,
    *,
    method: str = "gradcam",
    trigger: TriggerLike | None = None,
    target: int | None = None,
    compare: ModelLike | None = None,
    limit: int | None = None,
) -> GradcamResult:
    """Grad-CAM / Grad-CAM++ / Score-CAM maps (clean and triggered, before and after
    ``compare``), with how much of each map falls on the trigger."""
    from kerasaudit.stages.gradcam import DEFAULT_LIMIT, CamMethod
    from kerasaudit.stages.gradcam import gradcam as _gradcam

    keras_model = _keras(model)
    dataset = load_data(data, keras_model)
    return _gradcam(
        keras_model,
        dataset,
        method=CamMethod(method),
        trigger=None if trigger is None else make_trigger(trigger, dataset),
        target=target,
        compare=None if compare is None else _keras(compare),
        limit=DEFAULT_LIMIT if limit is None else limit,
    )


# --- helpers -------------------------------------------------------------------------------


def _loaded(model: ModelLike) -> LoadedModel:
    from kerasaudit.loading import LoadedModel

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    raise TypeError(
        "this function needs a model file or kerasaudit.load_model(...)'s result, "
        f"not {type(model).__name__}"
    )


def _as_loaded(model: Any) -> Any:
    """A model a stage returns, with the input and outputs its file had (see :func:`_keras`)."""
    from kerasaudit.model_view import file_model

    return file_model(model)


def _keras(model: ModelLike) -> Any:
    """The Keras model to run stages on: one that does not take ``(H, W, C)`` images or has
    several outputs is seen through a view (:mod:`kerasaudit.model_view`; its only score-vector
    output)."""
    from kerasaudit.loading import LoadedModel
    from kerasaudit.model_view import view

    if isinstance(model, LoadedModel):
        return view(model.model, model.output)
    if isinstance(model, str | os.PathLike):
        return view(load_model(model).model)
    return view(model)
