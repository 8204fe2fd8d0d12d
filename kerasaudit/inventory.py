"""Model inventory: every auditable layer (nested models included) and what follows it.

The scan and prune stages rely on this: a conv channel is measured where the next layer sees it
(after the conv's own activation; after BatchNormalization and ReLU when a block has them), and
pruning a channel must also zero the γ/β of the BatchNormalization that follows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kerasaudit.loading import LoadedModel

CONV_CLASSES = frozenset(
    {
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "SeparableConv1D",
        "SeparableConv2D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
    }
)
DENSE_CLASSES = frozenset({"Dense"})
# Layers that may sit between a conv (or its BN) and the tensor the next block sees.
ACTIVATION_CLASSES = frozenset({"ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax"})
NORM_CLASSES = frozenset({"BatchNormalization"})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class AuditableLayer:
    path: str  # e.g. "features/f_conv2" for a layer inside a nested model
    class_name: str
    channels: int  # output channels (units for Dense)
    kernel_size: tuple[int, ...]
    activation: str  # the layer's own activation ("linear" when a separate layer follows)
    batch_norm: str | None  # path of the BatchNormalization fed only by this layer
    post_activation: str | None  # path of the activation layer after the layer (or its BN)
    measured_after: str  # path of the layer whose output scan measures for this channel set
    output_shape: tuple[int | None, ...]
    params: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class_name": self.class_name,
            "channels": self.channels,
            "kernel_size": list(self.kernel_size),
            "activation": self.activation,
            "batch_norm": self.batch_norm,
            "post_activation": self.post_activation,
            "measured_after": self.measured_after,
            "output_shape": list(self.output_shape),
            "params": self.params,
        }


@dataclass(frozen=True)
class ModelInventory:
    path: str
    format: str
    keras_version: str | None
    backend: str | None
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    params_total: int
    params_trainable: int
    layer_count: int  # every layer, nested ones included
    auditable: tuple[AuditableLayer, ...]
    loaded_unsafely: bool
    safety_findings: tuple[str, ...]  # reported (not enforced) when loaded with --unsafe
    # in the training configuration, which is never loaded (a custom loss, say): reported only
    not_loaded: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "keras_version": self.keras_version,
            "backend": self.backend,
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "layer_count": self.layer_count,
            "auditable_layers": [layer.to_dict() for layer in self.auditable],
            "loaded_unsafely": self.loaded_unsafely,
            "safety_findings": list(self.safety_findings),
            "not_loaded": list(self.not_loaded),
        }


# Convolutions inside a custom (subclassed) layer are not in the model's graph.
NO_CONV_HINT = (
    "; convolutions inside custom layers are not reached, but `audit` and `defend` still "
    "search the whole model for triggers"
)


def walk_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yield (path, layer, parent_model) for every layer, descending into nested models."""
    keras = _keras()
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer, model
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix=f"{path}/")


def matching(layers: Sequence[AuditableLayer], name: str) -> list[AuditableLayer]:
    """The layers named ``name``: by path (``features/conv1``), else by bare name (``conv1``;
    several when nested models reuse it)."""
    exact = [a for a in layers if a.path == name]
    return exact or [a for a in layers if a.path.rsplit("/", 1)[-1] == name]


def named_layer(available: dict[str, AuditableLayer], name: str) -> AuditableLayer:
    """The layer of ``available`` (path → layer) named by its path or by a unique bare name
    (``conv1`` for ``features/conv1``); ``BadInputError`` otherwise, listing the conv layers."""
    from kerasaudit.errors import BadInputError

    matches = matching(list(available.values()), name)
    if len(matches) != 1:
        convs = ", ".join(p for p, i in available.items() if i.class_name in CONV_CLASSES)
        problem = "ambiguous layer" if matches else "unknown layer"
        raise BadInputError(f"{problem} {name!r}; auditable layers: {convs}")
    return matches[0]


def find_layer(model: Any, path: str) -> Any:
    for layer_path, layer, _ in walk_layers(model):
        if layer_path == path:
            return layer
    return None


def _keras() -> Any:
    from kerasaudit import _tf

    return _tf.keras()


def _consumers(model: Any) -> dict[int, list[Any]]:
    """Map id(layer) → layers of the same model that take its output as input."""
    keras = _keras()
    consumers: dict[int, list[Any]] = {}
    if isinstance(model, keras.Sequential):
        layers = model.layers
        for current, following in itertools.pairwise(layers):
            consumers.setdefault(id(current), []).append(following)
        return consumers
    members = {id(layer) for layer in model.layers}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for parent in getattr(node, "parent_nodes", []):
                producer = parent.operation
                if id(producer) in members and producer is not layer:
                    bucket = consumers.setdefault(id(producer), [])
                    if layer not in bucket:
                        bucket.append(layer)
    return consumers


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return str(getattr(activation, "__name__", activation))


def _shape(value: Any) -> tuple[int | None, ...]:
    try:
        return tuple(None if d is None else int(d) for d in value)
    except TypeError:
        return ()


def _output_shape(layer: Any) -> tuple[int | None, ...]:
    try:
        return _shape(layer.output.shape)
    except (AttributeError, ValueError):
        return ()


def _channels(layer: Any, class_name: str) -> int:
    if class_name in DENSE_CLASSES:
        return int(layer.units)
    if class_name.startswith("DepthwiseConv"):
        shape = _output_shape(layer)
        if shape and shape[-1] is not None:
            return int(shape[-1])
        kernel = layer.kernel.shape  # (k..., in, multiplier)
        return int(kernel[-2]) * int(kernel[-1])
    return int(layer.filters)


def auditable_layers(model: Any, *, include_dense: bool = False) -> list[AuditableLayer]:
    classes = CONV_CLASSES | (DENSE_CLASSES if include_dense else frozenset())
    result: list[AuditableLayer] = []
    consumer_maps: dict[int, dict[int, list[Any]]] = {}
    parent_prefix: dict[int, str] = {}
    for path, layer, parent in walk_layers(model):
        cls = type(layer).__name__
        if cls not in classes:
            continue
        if id(parent) not in consumer_maps:
            consumer_maps[id(parent)] = _consumers(parent)
            parent_prefix[id(parent)] = path[: -len(layer.name)]
        consumers = consumer_maps[id(parent)]
        prefix = parent_prefix[id(parent)]
        bn = post = None
        last = layer
        following = consumers.get(id(last), [])
        if len(following) == 1 and type(following[0]).__name__ in NORM_CLASSES:
            bn = following[0]
            last = bn
            following = consumers.get(id(last), [])
        if len(following) == 1 and type(following[0]).__name__ in ACTIVATION_CLASSES:
            post = following[0]
            last = post
        result.append(
            AuditableLayer(
                path=path,
                class_name=cls,
                channels=_channels(layer, cls),
                kernel_size=tuple(int(k) for k in getattr(layer, "kernel_size", ()) or ()),
                activation=_activation_name(layer),
                batch_norm=f"{prefix}{bn.name}" if bn is not None else None,
                post_activation=f"{prefix}{post.name}" if post is not None else None,
                measured_after=f"{prefix}{last.name}",
                output_shape=_output_shape(layer),
                params=int(layer.count_params()),
            )
        )
    return result


def conv_layers(model: Any) -> list[AuditableLayer]:
    """The convolutional layers among :func:`auditable_layers` (none when every convolution
    sits inside a custom layer)."""
    return [a for a in auditable_layers(model) if a.class_name in CONV_CLASSES]


def _tensor_infos(tensors: Any, names: list[str]) -> tuple[TensorInfo, ...]:
    items = tensors if isinstance(tensors, list | tuple) else [tensors]
    infos = []
    for i, tensor in enumerate(items):
        name = names[i] if i < len(names) else getattr(tensor, "name", f"tensor_{i}")
        infos.append(TensorInfo(str(name), _shape(tensor.shape), str(tensor.dtype)))
    return tuple(infos)


def build_inventory(loaded: LoadedModel, *, include_dense: bool = False) -> ModelInventory:
    model = loaded.model
    input_names = list(getattr(model, "input_names", []) or [])
    output_names = list(getattr(model, "output_names", []) or [])
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return ModelInventory(
        path=str(loaded.path),
        format=str(loaded.format),
        keras_version=loaded.keras_version,
        backend=loaded.backend,
        name=model.name,
        inputs=_tensor_infos(model.inputs, input_names),
        outputs=_tensor_infos(model.outputs, output_names),
        params_total=int(model.count_params()),
        params_trainable=trainable,
        layer_count=sum(1 for _ in walk_layers(model)),
        auditable=tuple(auditable_layers(model, include_dense=include_dense)),
        loaded_unsafely=loaded.unsafe,
        safety_findings=tuple(f"{f.where}: {f.reason}" for f in loaded.safety.findings),
        not_loaded=tuple(f"{f.where}: {f.reason}" for f in loaded.safety.ignored),
    )
