"""Explanation stage: class activation maps (Grad-CAM, Grad-CAM++, Score-CAM) with tf-keras-vis,
and a number that says whether a model looks at the trigger.

How the maps are computed
    tf-keras-vis needs a model in which the explained tensor is the output of a layer reachable
    from the model's input. Keras 3 does not expose layers inside nested models that way, so the
    model is *cloned* and the clone's graph is replayed on a symbolic input (``scan._Replay``),
    which flattens nested Sequential / Functional models into one functional graph; an Identity
    layer is inserted right after the explained tensor and handed to tf-keras-vis as its
    "penultimate layer". The caller's model is never changed.

    The explained tensor of a conv layer is the one the next block sees (``measured_after``:
    after its BatchNormalization and ReLU when it has them), as in the Grad-CAM paper, which
    uses rectified feature maps. Scores are taken before the output softmax/sigmoid (the clone's
    output activation is made linear, as tf-keras-vis' ``ReplaceToLinear`` does): gradients of a
    saturated probability (a triggered image is classified with p ≈ 1) carry almost nothing.
    Score-CAM turns those logits back into softmax probabilities itself.

The localisation number
    For triggered images: the share of the CAM's mass (its values after the ReLU, summed)
    inside the trigger's region, divided by the region's share of the CAM's grid. 1 means the
    map is no more on the trigger than on any other place of the same size; a backdoored model
    explaining its target label on triggered images scores far above 1. It is computed on the
    CAM at the explained layer's own resolution, with ``trigger.region_mask(h, w)``.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.data import Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import output_operation
from kerasaudit.inventory import (
    conv_layers,
    graph_ancestor,
    matching,
    matching_paths,
    walk_layers,
)
from kerasaudit.triggers import AnyTrigger, TriggerData

DEFAULT_LIMIT = 16
DEFAULT_BATCH_SIZE = 32
# Score-CAM runs the model on (channels × images) masked copies of the input; this bounds the
# memory of one such call (float32 inputs).
_SCORECAM_BYTES = 256 * 1024 * 1024
_PROBABILITY_ACTIVATIONS = frozenset({"softmax", "sigmoid"})
Progress = Callable[[int, int], None]  # (CAM batches done, CAM batches in total)


class CamMethod(StrEnum):
    GRADCAM = "gradcam"
    GRADCAM_PLUS_PLUS = "gradcam++"
    SCORECAM = "scorecam"

    @property
    def label(self) -> str:
        return {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}[self]


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CamTarget:
    """Which tensor the maps explain."""

    layer: str  # the layer asked for (a conv layer's path, or any layer with a spatial output)
    tensor: str  # path of the layer whose output is explained (after BN / activation)
    grid: tuple[int, int]  # (h, w) of the maps

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "tensor": self.tensor, "grid": list(self.grid)}


@dataclass(frozen=True)
class Localisation:
    """How much of the CAM mass of a set of images lies in the trigger's region."""

    images: int  # images with a non-zero map (the others have no mass to share)
    zero_maps: int  # images whose map is zero everywhere (left out)
    region_cells: int  # cells of the CAM grid inside the trigger's region
    grid_cells: int
    mass_share: float | None  # mean over images of (mass in region / total mass)
    ratio: float | None  # mean over images of mass share / area share
    ratio_median: float | None

    @property
    def area_share(self) -> float:
        return self.region_cells / self.grid_cells

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "zero_maps": self.zero_maps,
            "region_cells": self.region_cells,
            "grid_cells": self.grid_cells,
            "area_share": self.area_share,
            "mass_share": self.mass_share,
            "ratio": self.ratio,
            "ratio_median": self.ratio_median,
        }


@dataclass(frozen=True, eq=False)
class CamSet:
    """The maps of one model on one version (clean or triggered) of the images."""

    variant: str  # "clean" | "triggered"
    predicted: np.ndarray  # (N,) int64, the model's label for each image
    confidence: np.ndarray  # (N,) the model's output for that label (a probability if softmax)
    explained: np.ndarray  # (N,) int64, the label each map explains
    cams: np.ndarray  # (N, h, w) float32 ≥ 0, not normalised
    mass_share: np.ndarray | None  # (N,) share of each map's mass in the trigger region

    def image_dict(self, i: int, area_share: float | None) -> dict[str, Any]:
        share = None if self.mass_share is None else _finite(self.mass_share[i])
        ratio = None if share is None or not area_share else share / area_share
        return {
            "predicted": int(self.predicted[i]),
            "confidence": _finite(self.confidence[i]),
            "explained": int(self.explained[i]),
            "cam_max": _finite(self.cams[i].max()),
            "trigger_mass_share": share,
            "localisation_ratio": ratio,
        }


@dataclass(frozen=True, eq=False)
class ModelCams:
    role: str  # "model" | "compare"
    name: str  # the Keras model's name
    source: str | None  # the file it came from, when known
    target: CamTarget
    score: str  # what was differentiated / weighted, e.g. "logit (softmax removed)"
    clean: CamSet
    triggered: CamSet | None
    localisation: Localisation | None  # triggered images
    clean_localisation: Localisation | None  # the same region on clean images (a baseline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "source": self.source,
            **self.target.to_dict(),
            "score": self.score,
            "localisation": None if self.localisation is None else self.localisation.to_dict(),
            "clean_localisation": (
                None if self.clean_localisation is None else self.clean_localisation.to_dict()
            ),
        }


@dataclass(frozen=True, eq=False)
class GradcamResult:
    method: CamMethod
    class_rule: str  # "predicted" or "class K"
    indices: np.ndarray  # (N,) positions of the images in the data
    labels: np.ndarray | None  # (N,) true labels when the data has them
    class_names: tuple[str, ...] | None
    images: np.ndarray  # (N, H, W, C) clean inputs, model input space
    triggered_images: np.ndarray | None  # the same, stamped
    trigger: dict[str, Any] | None  # Trigger.to_dict()
    target: int | None  # the trigger's target label, when known
    region: np.ndarray | None  # (H, W) bool, where the trigger acts (input resolution)
    models: tuple[ModelCams, ...]  # the model, then --compare
    skipped_target_images: int  # images of the target class passed over (nothing to attack)
    data: str
    seconds: float
    notes: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.images)

    def label_name(self, label: int) -> str:
        names = self.class_names
        if names is not None and 0 <= label < len(names):
            return f"{label} ({names[label]})"
        return str(label)

    def to_dict(self) -> dict[str, Any]:
        images = []
        for i in range(self.count):
            entry: dict[str, Any] = {
                "index": int(self.indices[i]),
                "label": None if self.labels is None else int(self.labels[i]),
            }
            for cams in self.models:
                area = None if cams.localisation is None else cams.localisation.area_share
                entry[cams.role] = {
                    "clean": cams.clean.image_dict(i, area),
                    "triggered": (
                        None if cams.triggered is None else cams.triggered.image_dict(i, area)
                    ),
                }
            images.append(entry)
        return {
            "method": str(self.method),
            "class": self.class_rule,
            "data": self.data,
            "images_explained": self.count,
            "skipped_target_images": self.skipped_target_images,
            "trigger": self.trigger,
            "target": self.target,
            "models": [m.to_dict() for m in self.models],
            "images": images,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# --- choosing the explained tensor ---------------------------------------------------------


def _spatial_rank_ok(shape: Sequence[int | None]) -> bool:
    return len(shape) == 4  # (batch, h, w, channels)


def resolve_target(model: Any, layer: str | None) -> tuple[str, str]:
    """(layer asked for, path of the layer whose output is explained).

    Default: the last convolutional layer, explained after its BatchNorm/activation. A named
    conv layer (path like ``features/f_conv1`` or a unique bare name) is explained the same
    way; any other layer with a 2-D spatial output (e.g. ``relu4``) is explained as it is.
    """
    convs = conv_layers(model)
    # A conv that a custom layer calls from its own code has no tensor in the model's graph:
    # the custom layer's output is explained instead.
    conv2d = [
        a for a in convs if len(a.output_shape) == 4 and (a.custom_parent is None or a is convs[-1])
    ]
    known = ", ".join(a.path for a in conv2d if a.custom_parent is None) or "none"
    if layer is None:
        if not conv2d:
            raise BadInputError(
                "Grad-CAM needs a 2-D convolutional layer (maps over image space); "
                f"the model has none (conv layers: {', '.join(a.path for a in convs) or 'none'})"
            )
        last = conv2d[-1]
        if last.custom_parent is None:
            return last.path, last.measured_after
        layer = graph_ancestor(model, last.path)
    matches = matching(convs, layer)
    if len(matches) > 1:
        raise BadInputError(f"--layer {layer} is ambiguous; conv layers: {known}")
    if matches:
        chosen = matches[0]
        if chosen.custom_parent is not None:
            raise BadInputError(
                f"--layer {layer} is called by custom layer {chosen.custom_parent}'s own code, "
                f"so it has no tensor in the model's graph to explain; try --layer "
                f"{graph_ancestor(model, chosen.path)} (2-D conv layers: {known})"
            )
        if len(chosen.output_shape) != 4:
            raise BadInputError(
                f"--layer {layer} has output shape {chosen.output_shape}; Grad-CAM needs a "
                f"2-D map (batch, h, w, channels); 2-D conv layers: {known}"
            )
        return chosen.path, chosen.measured_after
    by_path = {p: obj for p, obj, _ in walk_layers(model)}
    found = matching_paths(list(by_path), layer)
    if len(found) != 1:
        problem = "is ambiguous" if found else "is not a layer of the model"
        raise BadInputError(f"--layer {layer} {problem}; 2-D conv layers: {known}")
    path, obj = found[0], by_path[found[0]]
    try:
        shape = tuple(obj.output.shape)
    except (AttributeError, ValueError):
        shape = ()
    if not _spatial_rank_ok(shape):
        raise BadInputError(
            f"--layer {layer} outputs shape {shape or 'unknown'}; Grad-CAM needs a 2-D map "
            f"(batch, h, w, channels); 2-D conv layers: {known}"
        )
    return path, path


# --- the flat graph handed to tf-keras-vis -------------------------------------------------


class _FlatGraph:
    """A clone of the model, replayed into one functional graph whose output is the logits and
    in which an Identity layer sits right after the explained tensor."""

    def __init__(self, model: Any, tensor_path: str) -> None:
        keras = _tf.keras()
        from kerasaudit.stages.scan import _Replay

        clone = keras.models.clone_model(model, recursive=True)
        clone.set_weights(model.get_weights())
        self.outputs = int(clone.outputs[0].shape[-1])
        self.score = self._linear_output(clone)
        tap = keras.layers.Identity(name="kerasaudit_cam_tap")
        skip = self._skip

        class TapReplay(_Replay):
            def _call(
                self,
                layer: Any,
                path: str,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                recorded: dict[str, Any],
            ) -> Any:
                if skip is not None and layer is skip:
                    return args[0]  # the output Softmax layer: logits go through
                output = super()._call(layer, path, args, kwargs, recorded)
                return tap(output) if path == tensor_path else output

        inputs = keras.Input(tuple(clone.inputs[0].shape[1:]), name="kerasaudit_cam_input")
        replay = TapReplay(clone, {tensor_path})
        recorded: dict[str, Any] = {}
        outputs = replay._run_model(clone, inputs, "", recorded)
        if tensor_path not in recorded:
            raise BadInputError(
                f"cannot explain {tensor_path}: not reached when replaying the model graph"
            )
        if isinstance(outputs, list | tuple):
            outputs = outputs[0]
        self.model = keras.Model(inputs, outputs, name=f"{model.name}_cam")
        self.tap = tap
        self.grid = tuple(int(d) for d in tap.output.shape[1:3])
        # Score-CAM calls model.predict() without verbose=0: its progress bar would land on
        # stdout, which carries only the report.
        self.model.predict = functools.partial(self.model.predict, verbose=0)

    _skip: Any = None

    def _linear_output(self, clone: Any) -> str:
        layer = output_operation(clone)
        cls = type(layer).__name__
        if cls == "Softmax":
            self._skip = layer
            return "logit (output Softmax layer bypassed)"
        activation = getattr(layer, "activation", None)
        name = str(getattr(activation, "__name__", "")) if activation is not None else ""
        if name in _PROBABILITY_ACTIVATIONS:
            layer.activation = _tf.keras().activations.linear
            return f"logit (output {name} removed)"
        return f"model output ({name or cls}; not a probability layer)"


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@contextlib.contextmanager
def _quiet_library() -> Iterator[None]:
    # tf-keras-vis 0.8.7 imports scipy.ndimage.interpolation (deprecated) and passes a list to
    # a single-input model in Score-CAM (Keras 3 warns): neither is the user's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _visualizer(method: CamMethod, model: Any) -> Any:
    _tf.tf()
    with _quiet_library():
        if method is CamMethod.GRADCAM:
            from tf_keras_vis.gradcam import Gradcam

            return Gradcam(model, clone=False)
        if method is CamMethod.GRADCAM_PLUS_PLUS:
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

            return GradcamPlusPlus(model, clone=False)
        from tf_keras_vis.scorecam import Scorecam

        return Scorecam(model, clone=False)


def _score(outputs: int, classes: np.ndarray) -> Any:
    with _quiet_library():
        from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

    if outputs == 1:
        return BinaryScore([bool(c) for c in classes])
    return CategoricalScore([int(c) for c in classes])


def _cams(
    flat: _FlatGraph,
    method: CamMethod,
    x: np.ndarray,
    classes: np.ndarray,
    batch_size: int,
    tick: Callable[[], None],
) -> np.ndarray:
    """Raw maps (N, h, w) ≥ 0 at the explained tensor's resolution, computed batch by batch."""
    visualizer = _visualizer(method, flat.model)
    size = batch_size
    if method is CamMethod.SCORECAM:
        channels = int(flat.tap.output.shape[-1])
        per_image = channels * int(np.prod(x.shape[1:])) * 4
        size = max(1, min(batch_size, _SCORECAM_BYTES // max(per_image, 1)))
    parts = []
    for part in _batches(len(x), size):
        kwargs: dict[str, Any] = {
            "penultimate_layer": flat.tap,
            "seek_penultimate_conv_layer": False,
            "expand_cam": False,
            "normalize_cam": False,
        }
        if method is CamMethod.SCORECAM:
            kwargs["batch_size"] = batch_size
        with _quiet_library():
            cam = visualizer(_score(flat.outputs, classes[part]), x[part], **kwargs)
        cam = np.asarray(cam, dtype=np.float32).reshape(len(x[part]), *flat.grid)
        parts.append(np.maximum(np.nan_to_num(cam, nan=0.0), 0.0))
        tick()
    return np.concatenate(parts)


# --- numbers -------------------------------------------------------------------------------


def mass_shares(cams: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per map: (mass inside ``region``) / (total mass); NaN for a map that is zero everywhere."""
    cams = np.asarray(cams, dtype=np.float64)
    total = cams.reshape(len(cams), -1).sum(axis=1)
    inside = cams[:, region].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def localisation(shares: np.ndarray, region: np.ndarray) -> Localisation:
    """Summarise per-image mass shares against the region's share of the grid."""
    area = float(region.mean())
    finite = shares[np.isfinite(shares)]
    ratios = finite / area if area > 0 else np.array([])
    return Localisation(
        images=int(finite.size),
        zero_maps=int(shares.size - finite.size),
        region_cells=int(region.sum()),
        grid_cells=int(region.size),
        mass_share=float(finite.mean()) if finite.size else None,
        ratio=float(ratios.mean()) if ratios.size else None,
        ratio_median=float(np.median(ratios)) if ratios.size else None,
    )


# --- the stage -----------------------------------------------------------------------------


def _classify(model: Any, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label, model output for it) for each image, with the model as it is."""
    tf = _tf.tf()
    labels, scores = [], []
    for part in _batches(len(x), batch_size):
        out = np.asarray(model(tf.constant(x[part]), training=False), dtype=np.float64)
        if out.shape[-1] == 1:
            predicted = (out[:, 0] > 0.5).astype(np.int64)
            score = np.where(predicted == 1, out[:, 0], 1.0 - out[:, 0])
        else:
            predicted = out.argmax(axis=-1).astype(np.int64)
            score = out[np.arange(len(out)), predicted]
        labels.append(predicted)
        scores.append(score)
    return np.concatenate(labels), np.concatenate(scores)


def _select(
    dataset: Dataset, limit: int, target: int | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """The first ``limit`` images (passing over the target class when a target is known)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    skipped = taken = start = 0
    has_labels = dataset.info.has_labels
    for x, y in dataset.batches():
        index = np.arange(start, start + len(x))
        start += len(x)
        keep = np.ones(len(x), bool)
        if target is not None and y is not None:
            keep = y != target
        keep_idx = np.flatnonzero(keep)[: limit - taken]
        if len(keep_idx) and not keep.all():
            # Count only the target-class images met before the last image taken.
            skipped += int((~keep[: keep_idx[-1] + 1]).sum())
        elif not len(keep_idx):
            skipped += int((~keep).sum())
        xs.append(x[keep_idx])
        positions.append(index[keep_idx])
        if y is not None:
            ys.append(y[keep_idx])
        taken += len(keep_idx)
        if taken >= limit:
            break
    if taken == 0:
        raise BadInputError(
            "no images to explain"
            + (f" (every image is of the target class {target})" if skipped else "")
        )
    labels = np.concatenate(ys) if has_labels and ys else None
    return np.concatenate(xs), labels, np.concatenate(positions), skipped


def _check_compatible(model: Any, other: Any) -> None:
    a, b = tuple(model.inputs[0].shape[1:]), tuple(other.inputs[0].shape[1:])
    oa, ob = tuple(model.outputs[0].shape[1:]), tuple(other.outputs[0].shape[1:])
    if a != b or oa != ob:
        raise BadInputError(
            f"--compare model takes {b} and outputs {ob}; the model takes {a} and outputs {oa}"
        )


def _explain_model(
    model: Any,
    role: str,
    source: str | None,
    layer: str | None,
    method: CamMethod,
    class_index: int | None,
    x: np.ndarray,
    x_triggered: np.ndarray | None,
    region_of: Callable[[int, int], np.ndarray] | None,
    batch_size: int,
    tick: Callable[[], None],
) -> ModelCams:
    asked, tensor = resolve_target(model, layer)
    flat = _FlatGraph(model, tensor)
    if method is CamMethod.SCORECAM and flat.outputs == 1:
        raise BadInputError(
            "scorecam weighs maps by softmax probabilities and needs a model with two or more "
            "outputs; use --method gradcam or gradcam++ for a single-unit (sigmoid) model"
        )
    if class_index is not None and not 0 <= class_index < max(flat.outputs, 2):
        raise BadInputError(
            f"--class {class_index} is outside the model's labels 0..{max(flat.outputs, 2) - 1}"
        )
    target = CamTarget(asked, tensor, (int(flat.grid[0]), int(flat.grid[1])))
    region = None if region_of is None else region_of(*target.grid)

    def cam_set(variant: str, images: np.ndarray) -> CamSet:
        predicted, confidence = _classify(model, images, batch_size)
        explained = predicted if class_index is None else np.full_like(predicted, class_index)
        cams = _cams(flat, method, images, explained, batch_size, tick)
        shares = None if region is None else mass_shares(cams, region)
        return CamSet(variant, predicted, confidence, explained, cams, shares)

    clean = cam_set("clean", x)
    triggered = None if x_triggered is None else cam_set("triggered", x_triggered)
    return ModelCams(
        role=role,
        name=str(model.name),
        source=source,
        target=target,
        score=flat.score,
        clean=clean,
        triggered=triggered,
        localisation=(
            None
            if triggered is None or triggered.mass_share is None or region is None
            else localisation(triggered.mass_share, region)
        ),
        clean_localisation=(
            None
            if clean.mass_share is None or region is None
            else localisation(clean.mass_share, region)
        ),
    )


def gradcam(
    model: Any,
    dataset: Dataset,
    *,
    method: CamMethod = CamMethod.GRADCAM,
    layer: str | None = None,
    class_index: int | None = None,
    limit: int = DEFAULT_LIMIT,
    trigger: AnyTrigger | None = None,
    target: int | None = None,
    compare: Any | None = None,
    model_source: str | None = None,
    compare_source: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> GradcamResult:
    """Class activation maps of the first ``limit`` images of ``dataset`` (clean, and stamped
    with ``trigger``), for ``model`` and, with ``compare``, for a second model (e.g. its pruned
    version) on the same images and layer.

    ``target`` (default: the trigger file's) makes images of the target class be passed over,
    as for ASR. ``class_index`` None explains each image's predicted label.
    """
    started = time.perf_counter()
    if limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}")
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
    if len(shape) != 3 or len(model.inputs) != 1:
        raise BadInputError(
            f"Grad-CAM explains image classifiers with one (H, W, C) input; {model.name} takes "
            f"{[tuple(t.shape[1:]) for t in getattr(model, 'inputs', []) or []]}"
        )
    if compare is not None:
        _check_compatible(model, compare)
    if target is None and trigger is not None:
        target = trigger.target
    if target is not None and trigger is None:
        raise BadInputError("--target needs --trigger (the target is the label it forces)")
    x, labels, indices, skipped = _select(dataset, limit, target)
    notes = []
    region: np.ndarray | None = None
    if isinstance(trigger, TriggerData):
        # Images that carry the trigger are other images than the clean ones, and where the
        # trigger acts is unknown: maps side by side, no localisation number.
        assert target is not None
        carried, _ = trigger.attack_images(target)
        count = min(len(x), len(carried))
        x, indices = x[:count], indices[:count]
        labels = None if labels is None else labels[:count]
        x_triggered = np.asarray(carried[:count], np.float32)
        region_of = None
        notes.append(
            "triggered images come from --trigger-data (not the clean images stamped); "
            "where the trigger acts is unknown: no localisation number"
        )
    elif trigger is not None:
        x_triggered = trigger.apply(x).astype(np.float32)
        region_of = trigger.region_mask
        region = trigger.region_mask()
    else:
        x_triggered, region_of = None, None
    models = [(model, "model", model_source)]
    if compare is not None:
        models.append((compare, "compare", compare_source))
    size = min(batch_size, len(x))
    per_set = -(-len(x) // size)
    total = per_set * len(models) * (1 if trigger is None else 2)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    explained = tuple(
        _explain_model(
            m, role, src, layer, method, class_index, x, x_triggered, region_of, size, tick
        )
        for m, role, src in models
    )
    if skipped:
        notes.append(
            f"{skipped} image(s) of the target class {target} passed over (a trigger has "
            "nothing to change on them)"
        )
    if region is not None and not region.any():
        notes.append("the trigger's region is empty: no localisation number")
    return GradcamResult(
        method=method,
        class_rule="predicted" if class_index is None else f"class {class_index}",
        indices=indices,
        labels=labels,
        class_names=dataset.info.class_names,
        images=x,
        triggered_images=x_triggered,
        trigger=None if trigger is None else trigger.to_dict(),
        target=target,
        region=region,
        models=explained,
        skipped_target_images=skipped,
        data=str(dataset.info.path),
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )
