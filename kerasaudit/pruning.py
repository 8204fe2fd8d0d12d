"""Channel pruning mechanics: clone, zero a channel for real, keep it zero while fine-tuning.

"Zeroing a channel" means its output is exactly 0 on any input: the conv's kernel slice and
bias, and the γ and β of a BatchNormalization that follows (γ·x̂ + β = 0 whatever the moving
statistics), so a ReLU after it also outputs 0. Which channels to zero is decided by
``kerasaudit.ranking``; this module only performs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasaudit.errors import BadInputError
from kerasaudit.inventory import AuditableLayer, find_layer


@dataclass(frozen=True)
class LayerPrune:
    layer: str  # path of the auditable layer
    channels: tuple[int, ...]  # output channels zeroed
    batch_norm: str | None  # path of the BN whose γ/β were zeroed too
    total_channels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "channels": list(self.channels),
            "batch_norm": self.batch_norm,
            "total_channels": self.total_channels,
        }


def clone_model(model: Any) -> Any:
    """An independent copy (config + weights), so the caller's model is never changed.

    Rebuilt by the model's own class: a top-level ``Sequential`` serialises its layers as a
    list, which ``keras.Model.from_config`` (functional configs only) refuses."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _variable(layer: Any, name: str) -> Any:
    for weight in layer.weights:
        if weight.path.split("/")[-1] == name or weight.name == name:
            return weight
    return None


def _channel_masks(layer: Any, class_name: str, channels: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-variable 0/1 masks that zero the given output channels of ``layer``."""
    masks: dict[str, np.ndarray] = {}
    chosen = np.asarray(list(channels), dtype=np.int64)

    def zero_last_axis(shape: tuple[int, ...]) -> np.ndarray:
        mask = np.ones(shape, dtype=np.float32)
        mask[..., chosen] = 0.0
        return mask

    if class_name.startswith("DepthwiseConv"):
        kernel = _variable(layer, "kernel")
        shape = tuple(kernel.shape)  # (k..., in, multiplier); out channel c = i*mult + m
        mask = np.ones(shape, dtype=np.float32)
        multiplier = shape[-1]
        for c in chosen:
            mask[..., int(c) // multiplier, int(c) % multiplier] = 0.0
        masks["kernel"] = mask
    elif class_name.startswith("SeparableConv"):
        pointwise = _variable(layer, "pointwise_kernel")
        masks["pointwise_kernel"] = zero_last_axis(tuple(pointwise.shape))
    elif class_name.endswith("Transpose"):
        kernel = _variable(layer, "kernel")  # (k..., out, in)
        mask = np.ones(tuple(kernel.shape), dtype=np.float32)
        mask[..., chosen, :] = 0.0
        masks["kernel"] = mask
    else:  # Conv1D/2D/3D, Dense: (..., out)
        masks["kernel"] = zero_last_axis(tuple(_variable(layer, "kernel").shape))
    bias = _variable(layer, "bias")
    if bias is not None:
        masks["bias"] = zero_last_axis(tuple(bias.shape))
    return masks


@dataclass
class PruneMask:
    """Variables and their 0/1 masks; ``apply()`` re-zeroes them after each fine-tune step."""

    pairs: list[tuple[Any, np.ndarray]]

    def apply(self) -> None:
        for variable, mask in self.pairs:
            variable.assign(np.asarray(variable.numpy()) * mask)


def zero_channels(
    model: Any, layers: Iterable[tuple[AuditableLayer, Sequence[int]]]
) -> tuple[list[LayerPrune], PruneMask]:
    """Zero the given channels in ``model`` (in place — pass a clone). Returns what was done and
    the mask that keeps it so."""
    pairs: list[tuple[Any, np.ndarray]] = []
    done: list[LayerPrune] = []
    for info, channels in layers:
        layer = find_layer(model, info.path)
        if layer is None:
            raise BadInputError(f"layer {info.path!r} not found in the model")
        channels = sorted({int(c) for c in channels})
        if channels and (channels[0] < 0 or channels[-1] >= info.channels):
            raise BadInputError(
                f"layer {info.path!r} has {info.channels} channels; asked to prune {channels}"
            )
        for name, mask in _channel_masks(layer, info.class_name, channels).items():
            pairs.append((_variable(layer, name), mask))
        if info.batch_norm is not None:
            bn = find_layer(model, info.batch_norm)
            for name in ("gamma", "beta"):
                variable = _variable(bn, name)
                if variable is not None:
                    mask = np.ones(tuple(variable.shape), dtype=np.float32)
                    mask[channels] = 0.0
                    pairs.append((variable, mask))
        done.append(LayerPrune(info.path, tuple(channels), info.batch_norm, info.channels))
    prune_mask = PruneMask(pairs)
    prune_mask.apply()
    return done, prune_mask


def clp_scores(model: Any, info: AuditableLayer) -> np.ndarray:
    """Channel Lipschitz constant upper bound (Zheng et al., ECCV 2022), data-free.

    For each output channel: the largest singular value of its kernel (reshaped to
    in_channels × spatial), times |γ/σ| of the BatchNormalization that follows, if any.
    """
    layer = find_layer(model, info.path)
    cls = info.class_name
    if cls.startswith("DepthwiseConv"):
        kernel = np.asarray(_variable(layer, "kernel").numpy())  # (k..., in, mult)
        per_channel = kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])  # (k, out)
        # Each output channel sees one input channel: its spectral norm is its ℓ2 norm.
        scores = np.linalg.norm(per_channel, axis=0)
    elif cls.startswith("SeparableConv"):
        depthwise = np.asarray(_variable(layer, "depthwise_kernel").numpy())
        pointwise = np.asarray(_variable(layer, "pointwise_kernel").numpy())
        # The separable kernel of output c is depthwise ⊗ pointwise[:, c]; bound by the product.
        dw_flat = depthwise.reshape(-1, depthwise.shape[-2] * depthwise.shape[-1])
        dw_norm = float(np.linalg.norm(dw_flat, 2))
        scores = dw_norm * np.linalg.norm(pointwise.reshape(-1, pointwise.shape[-1]), axis=0)
    else:
        kernel = np.asarray(_variable(layer, "kernel").numpy())
        if cls.endswith("Transpose"):
            kernel = np.moveaxis(kernel, -2, -1)  # → (k..., in, out)
        out = kernel.shape[-1]
        in_ch = kernel.shape[-2] if kernel.ndim >= 2 else 1
        # One (spatial × in_channels) matrix per output channel.
        matrices = np.moveaxis(kernel, -1, 0).reshape(out, -1, in_ch)
        scores = np.linalg.svd(matrices, compute_uv=False)[:, 0]
    if info.batch_norm is not None:
        bn = find_layer(model, info.batch_norm)
        gamma = _variable(bn, "gamma")
        variance = _variable(bn, "moving_variance")
        g = np.asarray(gamma.numpy()) if gamma is not None else np.ones(info.channels, np.float32)
        std = np.sqrt(np.asarray(variance.numpy()) + float(bn.epsilon))
        scores = scores * np.abs(g / std)
    return np.asarray(scores, dtype=np.float64)
