"""How many weights a model config makes Keras allocate, inferred from the graph itself.

Keras builds every layer while it deserializes a config, before a single stored weight is read:
a ``Dense(units=10**8)`` or two convolutions widened to 40,000 filters allocate gigabytes and
only then fail to match the weights file. The safety check compares what a config declares
with what the file stores; this module computes the declared side.

A layer's weight shapes depend on its config *and* on the shape of its input, so shapes are
propagated through the graph (``InputLayer`` → ``inbound_nodes`` → every layer, nested models
included) instead of being taken from ``build_config``, which a hostile file can simply
delete. Keras also builds a layer from ``build_config`` when one is present, so every
candidate input shape is tried and the largest count kept. Layers whose output shape is not
modelled here pass on an unknown shape; a weight-carrying layer with an unknown input width
counts it as 1, so the result never over-counts a genuine model.

Pure Python over the parsed JSON, iterative where nesting is unbounded, linear in the config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

Shape = tuple[int | None, ...]  # including the batch axis
MaybeShape = Shape | None

_MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})
_MAX_NESTED_MODELS = 64  # nesting depth followed (the JSON depth cap bounds it anyway)

# Layers whose output has the shape of their (first) input and that create no weights.
_SHAPE_PRESERVING = frozenset(
    {
        "Activation",
        "ActivityRegularization",
        "AlphaDropout",
        "Dropout",
        "ELU",
        "GaussianDropout",
        "GaussianNoise",
        "Identity",
        "LeakyReLU",
        "Masking",
        "ReLU",
        "Rescaling",
        "Softmax",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "ThresholdedReLU",
        "UnitNormalization",
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
        "RandomTranslation",
        "RandomBrightness",
        "RandomGrayscale",
        "RandomSaturation",
        "RandomHue",
        "RandomSharpness",
        "RandomPosterization",
        "RandomInvert",
        "RandomErasing",
        "RandomGaussianBlur",
        "RandomColorJitter",
        "RandomColorDegeneration",
        "RandomPerspective",
        "RandomElasticTransform",
        "Solarization",
        "Equalization",
        "AutoContrast",
        "TFOpLambda",
    }
)
_MERGE_ELEMENTWISE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
_RNN_GATES = {
    "LSTM": 4,
    "GRU": 3,
    "SimpleRNN": 1,
    "CuDNNLSTM": 4,
    "CuDNNGRU": 3,
}


def declared_weights(config: Any) -> int:
    """Weights (elements) Keras allocates to build the model ``config`` describes.

    Exact for the layers modelled here, a lower bound otherwise (never an over-count of a
    model whose recorded shapes are its real ones)."""
    if not isinstance(config, dict):
        return 0
    inference = _Inference()
    params, _ = inference.layer(config, [], depth=0)
    return params


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _first_int(value: Any, default: int) -> int:
    values = _ints(value)
    return values[0] if values else default


def _dims(value: Any) -> MaybeShape:
    """A recorded shape (``[null, 28, 28, 1]``) as a tuple; None if it is not one."""
    if not isinstance(value, list | tuple) or not value or len(value) > 16:
        return None
    dims: list[int | None] = []
    for v in value:
        if v is None:
            dims.append(None)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            dims.append(v)
        else:
            return None
    return tuple(dims)


def _prod(values: Iterable[int | None]) -> int | None:
    total = 1
    for v in values:
        if v is None:
            return None
        total *= v
    return total


def _width(shape: MaybeShape, axis: int = -1) -> int:
    """The size of ``axis`` (unknown → 1, so counts stay lower bounds)."""
    if shape is None or not shape:
        return 1
    try:
        value = shape[axis]
    except IndexError:
        return 1
    return value if isinstance(value, int) and value > 0 else 1


def _bias(config: dict[str, Any], size: int, key: str = "use_bias") -> int:
    return size if config.get(key, True) is not False else 0


class _Inference:
    def __init__(self) -> None:
        self.layer_rules: dict[str, Callable[[dict[str, Any], list[MaybeShape]], _Result]] = {
            "Dense": _dense,
            "EinsumDense": _einsum_dense,
            "Embedding": _embedding,
            "BatchNormalization": _batch_norm,
            "LayerNormalization": _layer_norm,
            "GroupNormalization": _group_norm,
            "PReLU": _prelu,
            "Concatenate": _concatenate,
            "Flatten": _flatten,
            "Reshape": _reshape,
            "Permute": _permute,
            "RepeatVector": _repeat_vector,
            "MultiHeadAttention": _multi_head_attention,
            "InputLayer": _input_layer,
            "Resizing": _resize_like,
            "CenterCrop": _resize_like,
            "RandomCrop": _resize_like,
        }

    # -- dispatch --------------------------------------------------------------------------

    def layer(self, obj: dict[str, Any], inputs: list[MaybeShape], depth: int) -> _Result:
        """(weights, output shapes) of one serialized layer called on ``inputs``."""
        cls = obj.get("class_name")
        config = obj.get("config")
        if not isinstance(cls, str) or not isinstance(config, dict):
            return 0, [None]
        if cls in _MODEL_CLASSES and depth < _MAX_NESTED_MODELS:
            if cls == "Sequential" or "input_layers" not in config:
                return self.sequential(config, inputs, depth + 1)
            return self.functional(config, inputs, depth + 1)
        params = 0
        outputs: list[MaybeShape] = [None]
        for candidate in _candidate_inputs(obj, config, inputs):
            count, shapes = self.simple_layer(cls, config, candidate, depth)
            params = max(params, count)  # whichever shape Keras builds it with
            if outputs == [None] or all(s is None for s in outputs):
                outputs = shapes  # the graph's own shapes first, recorded ones as fallback
        return params, outputs

    def simple_layer(
        self, cls: str, config: dict[str, Any], inputs: list[MaybeShape], depth: int
    ) -> _Result:
        x = inputs[0] if inputs else None
        if cls in self.layer_rules:
            return self.layer_rules[cls](config, inputs)
        if cls in _SHAPE_PRESERVING:
            return 0, [x]
        if cls in _MERGE_ELEMENTWISE:
            known = [s for s in inputs if s is not None]
            return 0, [known[0] if known else None]
        if cls.startswith(("Conv", "Convolution")) and "LSTM" not in cls:
            return _conv(cls, config, inputs)
        if cls.startswith("DepthwiseConv"):
            return _depthwise(config, inputs)
        if cls.startswith(("SeparableConv", "SeparableConvolution")):
            return _separable(config, inputs)
        if cls in _RNN_GATES:
            return _rnn(cls, config, inputs)
        if cls == "ConvLSTM1D" or cls == "ConvLSTM2D" or cls == "ConvLSTM3D":
            return _conv_lstm(config, inputs)
        if cls.startswith(("MaxPool", "AveragePool", "AvgPool")):
            return _pool(config, inputs)
        if cls.startswith(("GlobalAveragePool", "GlobalMaxPool", "GlobalAvgPool")):
            return _global_pool(config, inputs)
        if cls.startswith("UpSampling"):
            return _upsampling(config, inputs)
        if cls.startswith("ZeroPadding"):
            return _padding(config, inputs, sign=1)
        if cls.startswith("Cropping"):
            return _padding(config, inputs, sign=-1)
        if cls == "Bidirectional":
            return self.bidirectional(config, inputs, depth)
        if cls == "TimeDistributed":
            return self.time_distributed(config, inputs, depth)
        return _fallback(cls, config, inputs)

    # -- containers ------------------------------------------------------------------------

    def sequential(self, config: dict[str, Any], inputs: list[MaybeShape], depth: int) -> _Result:
        layers = config.get("layers")
        if not isinstance(layers, list):
            return 0, [None]
        shape: MaybeShape = inputs[0] if inputs else None
        own = _dims(config.get("build_input_shape"))
        total = 0
        # Keras builds a Sequential from its own InputLayer / build_input_shape; a call on a
        # differently shaped input builds nothing new, so the larger count is what it costs.
        if own is not None and shape is None:
            shape = own
        for layer in layers:
            if not isinstance(layer, dict):
                continue
            if layer.get("class_name") == "InputLayer":
                declared = _input_shape_of(layer.get("config"))
                if declared is not None:
                    shape = declared if shape is None else _larger(shape, declared)
                continue
            layer_config = layer.get("config")
            if isinstance(layer_config, dict) and shape is None:
                shape = _dims(layer_config.get("batch_input_shape")) or shape
            params, outputs = self.layer(layer, [shape], depth)
            total += params
            shape = outputs[0] if outputs else None
        return total, [shape]

    def functional(self, config: dict[str, Any], inputs: list[MaybeShape], depth: int) -> _Result:
        layers = config.get("layers")
        if not isinstance(layers, list):
            return 0, [None]
        tensors: dict[tuple[str, int], list[MaybeShape]] = {}  # (layer, tensor) -> per call
        outer = dict(zip(_ref_names(config.get("input_layers")), inputs, strict=False))
        total = 0
        for layer in layers:
            if not isinstance(layer, dict):
                continue
            name = layer.get("name")
            layer_config = layer.get("config")
            if not isinstance(name, str) and isinstance(layer_config, dict):
                name = layer_config.get("name")
            if not isinstance(name, str):
                continue
            nodes = layer.get("inbound_nodes")
            calls = [_node_refs(node) for node in nodes] if isinstance(nodes, list) else []
            if not calls:
                params, outputs = self.layer(layer, [], depth)
                outer_shape = outer.get(name)
                if outer_shape is not None:
                    outputs = [_larger(outer_shape, outputs[0] if outputs else None)]
                total += params
                _record(tensors, name, outputs)
                continue
            best = 0
            for refs in calls:
                shapes = [_lookup(tensors, ref) for ref in refs]
                params, outputs = self.layer(layer, shapes, depth)
                best = max(best, params)  # shared layers are built once
                _record(tensors, name, outputs)
            total += best
        outputs = [_lookup(tensors, ref) for ref in _refs_of(config.get("output_layers"))]
        return total, outputs or [None]

    def bidirectional(
        self, config: dict[str, Any], inputs: list[MaybeShape], depth: int
    ) -> _Result:
        forward = config.get("layer")
        backward = config.get("backward_layer", forward)
        if not isinstance(forward, dict):
            return 0, [None]
        f_params, f_out = self.layer(forward, inputs, depth)
        b_params, b_out = (
            self.layer(backward, inputs, depth) if isinstance(backward, dict) else (f_params, f_out)
        )
        out = f_out[0] if f_out else None
        if out is not None and config.get("merge_mode", "concat") == "concat":
            back = b_out[0] if b_out else None
            last = out[-1]
            other = back[-1] if back else None
            total = last + other if last is not None and other is not None else None
            out = (*out[:-1], total)
        return f_params + b_params, [out]

    def time_distributed(
        self, config: dict[str, Any], inputs: list[MaybeShape], depth: int
    ) -> _Result:
        inner = config.get("layer")
        if not isinstance(inner, dict):
            return 0, [None]
        x = inputs[0] if inputs else None
        inner_in: MaybeShape = (x[0], *x[2:]) if x is not None and len(x) >= 2 else None
        params, outputs = self.layer(inner, [inner_in], depth)
        out = outputs[0] if outputs else None
        if out is not None and x is not None:
            return params, [(x[0], x[1], *out[1:])]
        return params, [None]


_Result = tuple[int, list[MaybeShape]]


# -- helpers for graphs ------------------------------------------------------------------------


def _larger(a: Shape, b: MaybeShape) -> Shape:
    if b is None or len(a) != len(b):
        return a
    return tuple(
        max(x, y) if x is not None and y is not None else (x if x is not None else y)
        for x, y in zip(a, b, strict=True)
    )


def _input_shape_of(config: Any) -> MaybeShape:
    if not isinstance(config, dict):
        return None
    for key in ("batch_shape", "batch_input_shape"):
        shape = _dims(config.get(key))
        if shape is not None:
            return shape
    shape = _dims(config.get("shape"))
    return (None, *shape) if shape is not None else None


def _candidate_inputs(
    obj: dict[str, Any], config: dict[str, Any], inputs: list[MaybeShape]
) -> list[list[MaybeShape]]:
    """The input shapes Keras may build a layer with: the graph's, and the recorded ones."""
    candidates = [inputs]
    build = obj.get("build_config")
    if isinstance(build, dict):
        recorded = build.get("input_shape")
        if isinstance(recorded, list) and recorded and all(isinstance(r, list) for r in recorded):
            candidates.append([_dims(r) for r in recorded])
        else:
            candidates.append([_dims(recorded)])
    batch_input = _dims(config.get("batch_input_shape"))
    if batch_input is not None:
        candidates.append([batch_input])
    return candidates


def _record(tensors: dict[tuple[str, int], list[MaybeShape]], name: str, outs: list[Any]) -> None:
    for index, shape in enumerate(outs[:64]):
        tensors.setdefault((name, index), []).append(shape)


def _lookup(tensors: dict[tuple[str, int], list[MaybeShape]], ref: tuple[str, int, int]) -> Any:
    calls = tensors.get((ref[0], ref[2]))
    if not calls:
        return None
    node = ref[1]
    # Keras 2 numbers a nested model's first call 1 (see loading.repair_keras2_config).
    if 0 <= node < len(calls):
        return calls[node]
    return calls[-1]


def _ref_names(value: Any) -> list[str]:
    return [ref[0] for ref in _refs_of(value)]


def _refs_of(value: Any) -> list[tuple[str, int, int]]:
    """``[["in", 0, 0], ...]`` or a single ``["in", 0, 0]`` → references."""
    if not isinstance(value, list):
        return []
    if len(value) >= 3 and isinstance(value[0], str):
        value = [value]
    refs = []
    for item in value:
        if (
            isinstance(item, list)
            and len(item) >= 3
            and isinstance(item[0], str)
            and isinstance(item[1], int)
            and isinstance(item[2], int)
        ):
            refs.append((item[0], item[1], item[2]))
    return refs


def _node_refs(node: Any) -> list[tuple[str, int, int]]:
    """The tensors one call of a layer consumes, in order (Keras 3 and Keras 2 formats)."""
    refs: list[tuple[str, int, int]] = []
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        stack: list[Any] = [node.get("kwargs", {}), node.get("args", [])]
        while stack and len(refs) < 256:
            item = stack.pop()
            if isinstance(item, dict):
                if item.get("class_name") == "__keras_tensor__":
                    tensor = item.get("config")
                    history = tensor.get("keras_history") if isinstance(tensor, dict) else None
                    found = _refs_of(history)
                    refs.extend(found[:1])
                else:
                    stack.extend(reversed(list(item.values())))
            elif isinstance(item, list):
                stack.extend(reversed(item))
        return refs
    if isinstance(node, list):  # Keras 2: [["layer", node, tensor, {kwargs}], ...]
        return _refs_of(node)
    return refs


# -- per-layer rules ---------------------------------------------------------------------------


def _input_layer(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    return 0, [_input_shape_of(config)]


def _dense(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    units = max(0, _first_int(config.get("units"), 0))
    params = _width(x) * units + _bias(config, units)
    return params, [(*x[:-1], units) if x is not None else None]


_EINSUM_RE = re.compile(r"^([a-zA-Z.]+),([a-zA-Z.]+)->([a-zA-Z.]+)$")


def _einsum_dense(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    equation = str(config.get("equation", "")).replace(" ", "")
    match = _EINSUM_RE.match(equation)
    out_dims = _ints(config.get("output_shape"))
    if not match:
        return math.prod(max(1, d) for d in out_dims) if out_dims else 0, [None]
    ins, kernel, outs = match.groups()
    sizes: dict[str, int] = {}
    if x is not None:
        for letter, dim in zip(reversed(ins), reversed(x), strict=False):
            if dim is not None and letter != ".":
                sizes[letter] = dim
    out_letters = outs.replace(".", "")
    for letter, dim in zip(reversed(out_letters), reversed(out_dims), strict=False):
        sizes.setdefault(letter, dim)
    params = math.prod(max(1, sizes.get(letter, 1)) for letter in kernel if letter != ".")
    bias_axes = config.get("bias_axes")
    if isinstance(bias_axes, str):
        params += math.prod(max(1, sizes.get(letter, 1)) for letter in bias_axes)
    return params, [None]


def _embedding(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    dim = max(0, _first_int(config.get("input_dim"), 0))
    out = max(0, _first_int(config.get("output_dim"), 0))
    return dim * out, [(*x, out) if x is not None else None]


def _axes(value: Any, rank: int) -> list[int]:
    axes = _ints(value) or [-1]
    return [a if a >= 0 else rank + a for a in axes]


def _norm_size(config: dict[str, Any], x: MaybeShape) -> int:
    if x is None:
        return 1
    return math.prod(_width(x, a) for a in _axes(config.get("axis", -1), len(x)) if a < len(x))


def _batch_norm(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    size = _norm_size(config, x)
    params = 2 * size + _bias(config, size, "center") + _bias(config, size, "scale")
    return params, [x]


def _layer_norm(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    size = _norm_size(config, x)
    if config.get("rms_scaling"):
        return size, [x]
    return _bias(config, size, "center") + _bias(config, size, "scale"), [x]


def _group_norm(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    size = _norm_size(config, x)
    return _bias(config, size, "center") + _bias(config, size, "scale"), [x]


def _prelu(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    if x is None:
        return 1, [x]
    shared = set(_axes(config.get("shared_axes"), len(x)) if config.get("shared_axes") else [])
    return math.prod(1 if i in shared else _width(x, i) for i in range(1, len(x))), [x]


def _concatenate(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    known = [s for s in inputs if s is not None]
    if not known or len(known) != len(inputs):
        return 0, [known[0] if known else None]
    rank = len(known[0])
    axis = _first_int(config.get("axis"), -1)
    axis = axis if axis >= 0 else rank + axis
    if any(len(s) != rank for s in known) or not 0 <= axis < rank:
        return 0, [None]
    sizes = [s[axis] for s in known]
    total = sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
    out = list(known[0])
    out[axis] = total
    return 0, [tuple(out)]


def _flatten(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    if x is None:
        return 0, [None]
    return 0, [(x[0], _prod(x[1:]))]


def _reshape(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    target = config.get("target_shape")
    if not isinstance(target, list | tuple):
        return 0, [None]
    dims: list[int | None] = [d if isinstance(d, int) and d >= 0 else None for d in target]
    total = _prod(x[1:]) if x is not None else None
    known = _prod(d for d in dims if d is not None)
    if dims.count(None) == 1 and total is not None and known:
        dims[dims.index(None)] = total // known
    return 0, [(x[0] if x else None, *dims)]


def _permute(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    order = _ints(config.get("dims"))
    if x is None or sorted(order) != list(range(1, len(x))):
        return 0, [None]
    return 0, [(x[0], *(x[i] for i in order))]


def _repeat_vector(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    n = _first_int(config.get("n"), 1)
    return 0, [(x[0], n, *x[1:]) if x is not None else None]


def _multi_head_attention(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    query = inputs[0] if inputs else None
    value = inputs[1] if len(inputs) > 1 else query
    key = inputs[2] if len(inputs) > 2 else value
    heads = max(0, _first_int(config.get("num_heads"), 0))
    key_dim = max(0, _first_int(config.get("key_dim"), 0))
    value_dim = max(0, _first_int(config.get("value_dim"), key_dim) or key_dim)
    q, k, v = _width(query), _width(key), _width(value)
    out_dims = _ints(config.get("output_shape"))
    out = math.prod(out_dims) if out_dims else q
    bias = config.get("use_bias", True) is not False
    params = heads * key_dim * (q + k) + heads * value_dim * v + heads * value_dim * out
    if bias:
        params += 2 * heads * key_dim + heads * value_dim + out
    return params, [(*query[:-1], out) if query is not None and not out_dims else None]


def _resize_like(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    height, width = _first_int(config.get("height"), 0), _first_int(config.get("width"), 0)
    if x is None or len(x) != 4 or not height or not width:
        return 0, [None]
    if config.get("data_format") == "channels_first":
        return 0, [(x[0], x[1], height, width)]
    return 0, [(x[0], height, width, x[3])]


def _channel_axis(config: dict[str, Any], rank: int) -> int:
    return 1 if config.get("data_format") == "channels_first" else rank - 1


def _spatial(x: Shape, config: dict[str, Any]) -> tuple[list[int], list[int | None]]:
    """(spatial axes, their sizes) of a batched channels-first/last tensor."""
    channel = _channel_axis(config, len(x))
    axes = [i for i in range(1, len(x)) if i != channel]
    return axes, [x[i] for i in axes]


def _conv_length(size: int | None, kernel: int, stride: int, dilation: int, padding: str) -> Any:
    if size is None:
        return None
    if padding == "same":
        return -(-size // max(1, stride))
    if padding == "causal":
        return -(-size // max(1, stride))
    effective = (kernel - 1) * max(1, dilation) + 1
    return max(0, (size - effective) // max(1, stride) + 1)


def _per_axis(value: Any, rank: int, default: int) -> list[int]:
    values = _ints(value)
    if not values:
        return [default] * rank
    if len(values) == 1:
        return values * rank
    return (values + [default] * rank)[:rank]


def _with_spatial(x: Shape, config: dict[str, Any], sizes: list[Any], channels: Any) -> Shape:
    out = list(x)
    axes, _ = _spatial(x, config)
    for axis, size in zip(axes, sizes, strict=False):
        out[axis] = size
    out[_channel_axis(config, len(x))] = channels
    return tuple(out)


def _conv(cls: str, config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    filters = max(0, _first_int(config.get("filters"), 0))
    kernel = [max(1, k) for k in _ints(config.get("kernel_size"))] or [1]
    channels = _width(x, _channel_axis(config, len(x))) if x is not None else 1
    transpose = "Transpose" in cls
    groups = max(1, _first_int(config.get("groups"), 1))
    per_group = channels if transpose else max(1, channels // groups)
    params = math.prod(kernel) * per_group * filters + _bias(config, filters)
    if x is None or len(x) != len(kernel) + 2:
        return params, [None]
    strides = _per_axis(config.get("strides"), len(kernel), 1)
    dilation = _per_axis(config.get("dilation_rate"), len(kernel), 1)
    padding = str(config.get("padding", "valid")).lower()
    _, sizes = _spatial(x, config)
    if transpose:
        new = [
            None if s is None else (s * st if padding == "same" else s * st + max(k - st, 0))
            for s, k, st in zip(sizes, kernel, strides, strict=False)
        ]
    else:
        new = [
            _conv_length(s, k, st, d, padding)
            for s, k, st, d in zip(sizes, kernel, strides, dilation, strict=False)
        ]
    return params, [_with_spatial(x, config, new, filters)]


def _depthwise(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    multiplier = max(1, _first_int(config.get("depth_multiplier"), 1))
    kernel = [max(1, k) for k in _ints(config.get("kernel_size"))] or [1]
    channels = _width(x, _channel_axis(config, len(x))) if x is not None else 1
    params = math.prod(kernel) * channels * multiplier + _bias(config, channels * multiplier)
    if x is None or len(x) != len(kernel) + 2:
        return params, [None]
    strides = _per_axis(config.get("strides"), len(kernel), 1)
    dilation = _per_axis(config.get("dilation_rate"), len(kernel), 1)
    padding = str(config.get("padding", "valid")).lower()
    _, sizes = _spatial(x, config)
    new = [
        _conv_length(s, k, st, d, padding)
        for s, k, st, d in zip(sizes, kernel, strides, dilation, strict=False)
    ]
    out_channels = x[_channel_axis(config, len(x))]
    return params, [
        _with_spatial(x, config, new, out_channels * multiplier if out_channels else None)
    ]


def _separable(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    multiplier = max(1, _first_int(config.get("depth_multiplier"), 1))
    filters = max(0, _first_int(config.get("filters"), 0))
    kernel = [max(1, k) for k in _ints(config.get("kernel_size"))] or [1]
    channels = _width(x, _channel_axis(config, len(x))) if x is not None else 1
    params = (
        math.prod(kernel) * channels * multiplier
        + channels * multiplier * filters
        + _bias(config, filters)
    )
    if x is None or len(x) != len(kernel) + 2:
        return params, [None]
    strides = _per_axis(config.get("strides"), len(kernel), 1)
    dilation = _per_axis(config.get("dilation_rate"), len(kernel), 1)
    padding = str(config.get("padding", "valid")).lower()
    _, sizes = _spatial(x, config)
    new = [
        _conv_length(s, k, st, d, padding)
        for s, k, st, d in zip(sizes, kernel, strides, dilation, strict=False)
    ]
    return params, [_with_spatial(x, config, new, filters)]


def _rnn(cls: str, config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    units = max(0, _first_int(config.get("units"), 0))
    gates = _RNN_GATES[cls]
    bias = gates * units * (2 if cls == "GRU" and config.get("reset_after", True) else 1)
    params = gates * (_width(x) * units + units * units) + _bias(config, bias)
    if x is None or len(x) < 3:
        return params, [None]
    out: Shape = (x[0], x[1], units) if config.get("return_sequences") else (x[0], units)
    outputs: list[MaybeShape] = [out]
    if config.get("return_state"):
        outputs.extend([(x[0], units)] * (2 if cls in ("LSTM", "CuDNNLSTM") else 1))
    return params, outputs


def _conv_lstm(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    filters = max(0, _first_int(config.get("filters"), 0))
    kernel = math.prod(max(1, k) for k in _ints(config.get("kernel_size")) or [1])
    params = 4 * (kernel * _width(x) * filters + kernel * filters * filters)
    return params + _bias(config, 4 * filters), [None]


def _pool(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    if x is None or len(x) < 3:
        return 0, [None]
    rank = len(x) - 2
    pool = _per_axis(config.get("pool_size"), rank, 2)
    strides = _per_axis(config.get("strides"), rank, 0)
    strides = [s or p for s, p in zip(strides, pool, strict=False)]
    padding = str(config.get("padding", "valid")).lower()
    _, sizes = _spatial(x, config)
    new = [
        _conv_length(s, k, st, 1, padding) for s, k, st in zip(sizes, pool, strides, strict=False)
    ]
    return 0, [_with_spatial(x, config, new, x[_channel_axis(config, len(x))])]


def _global_pool(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    if x is None or len(x) < 3:
        return 0, [None]
    channels = x[_channel_axis(config, len(x))]
    if config.get("keepdims"):
        return 0, [_with_spatial(x, config, [1] * (len(x) - 2), channels)]
    return 0, [(x[0], channels)]


def _upsampling(config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    x = inputs[0] if inputs else None
    if x is None or len(x) < 3:
        return 0, [None]
    rank = len(x) - 2
    factors = _per_axis(config.get("size"), rank, 2)
    if rank == 1:  # UpSampling1D: (batch, steps, features)
        return 0, [(x[0], None if x[1] is None else x[1] * factors[0], x[2])]
    _, sizes = _spatial(x, config)
    new = [None if s is None else s * f for s, f in zip(sizes, factors, strict=False)]
    return 0, [_with_spatial(x, config, new, x[_channel_axis(config, len(x))])]


def _padding(config: dict[str, Any], inputs: list[MaybeShape], sign: int) -> _Result:
    x = inputs[0] if inputs else None
    if x is None or len(x) < 3:
        return 0, [None]
    rank = len(x) - 2
    key = "padding" if sign > 0 else "cropping"
    raw = config.get(key)
    amounts: list[int] = []
    if isinstance(raw, int):
        amounts = [2 * raw] * rank
    elif isinstance(raw, list):
        for item in raw[:rank]:
            amounts.append(sum(_ints(item)) if isinstance(item, list) else 2 * _first_int(item, 0))
    amounts = (amounts + [0] * rank)[:rank]
    if rank == 1:
        steps = x[1]
        return 0, [(x[0], None if steps is None else steps + sign * amounts[0], x[2])]
    _, sizes = _spatial(x, config)
    new = [
        None if s is None else max(0, s + sign * a) for s, a in zip(sizes, amounts, strict=False)
    ]
    return 0, [_with_spatial(x, config, new, x[_channel_axis(config, len(x))])]


def _fallback(cls: str, config: dict[str, Any], inputs: list[MaybeShape]) -> _Result:
    """Weight-carrying layers not modelled above: a lower bound, output unknown."""
    x = inputs[0] if inputs else None
    if "units" in config:
        units = max(0, _first_int(config.get("units"), 0))
        return _width(x) * units, [None]
    if "filters" in config:
        filters = max(0, _first_int(config.get("filters"), 0))
        kernel = math.prod(max(1, k) for k in _ints(config.get("kernel_size")) or [1])
        return kernel * filters, [None]
    return 0, [None]
