"""Warping images by a displacement field: the trigger form of WaNet-style backdoors.

A warp trigger (Nguyen & Tran, "WaNet", ICLR 2021) moves every pixel a little along a smooth
field instead of painting anything: no patch, no added pattern, so Neural Cleanse's mask and the
additive perturbation both miss it. Here a field is ``flow`` (H, W, 2), the (row, column)
displacement in pixels of where each output pixel samples the input, read bilinearly with
coordinates clamped to the image (WaNet's ``grid_sample`` with border clamping).

The same sampling in NumPy (:func:`warp`, for stamping trigger files) and TensorFlow
(:func:`warp_tf`, differentiable in the field, for inversion and unlearning).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def magnitude(flow: np.ndarray) -> np.ndarray:
    """How far each pixel's content moves (H, W), in pixels, for a field (H, W, 2)."""
    return np.sqrt(np.square(np.asarray(flow, np.float64)).sum(axis=-1))


def rms(flow: np.ndarray) -> float:
    """Root-mean-square displacement of a field (H, W, 2), in pixels."""
    return float(np.sqrt(np.square(magnitude(flow)).mean()))


def _corners(flow: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ...]:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    y = np.clip(rows + flow[..., 0], 0, height - 1)
    x = np.clip(cols + flow[..., 1], 0, width - 1)
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    y1 = np.minimum(y0 + 1, height - 1)
    x1 = np.minimum(x0 + 1, width - 1)
    return y0, x0, y1, x1, (y - y0)[..., None], (x - x0)[..., None]


def warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Images (N, H, W, C) warped by one field (H, W, 2); a new array, ``x`` untouched."""
    x = np.asarray(x)
    height, width = x.shape[1], x.shape[2]
    if flow.shape != (height, width, 2):
        raise ValueError(f"warp field {flow.shape} does not fit images {x.shape[1:3]}")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    y0, x0, y1, x1, wy, wx = _corners(np.asarray(flow, np.float64), height, width)
    v = x.astype(np.float64, copy=False)
    out = (
        v[:, y0, x0] * (1 - wy) * (1 - wx)
        + v[:, y0, x1] * (1 - wy) * wx
        + v[:, y1, x0] * wy * (1 - wx)
        + v[:, y1, x1] * wy * wx
    )
    return out.astype(dtype)


def warp_tf(x: Any, flow: Any) -> Any:
    """TensorFlow: images (N, H, W, C) warped by fields (N, H, W, 2) (or one (H, W, 2) for
    all), differentiable in ``flow``; usable inside ``tf.function``."""
    from kerasaudit import _tf

    tf = _tf.tf()
    shape = tf.shape(x)
    n, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    flow = tf.cast(flow, x.dtype)
    if flow.shape.rank == 3:
        flow = tf.broadcast_to(flow[None], tf.concat([[n], tf.shape(flow)], 0))
    rows, cols = tf.meshgrid(
        tf.range(height, dtype=x.dtype), tf.range(width, dtype=x.dtype), indexing="ij"
    )
    y = tf.clip_by_value(rows[None] + flow[..., 0], 0.0, tf.cast(height - 1, x.dtype))
    xx = tf.clip_by_value(cols[None] + flow[..., 1], 0.0, tf.cast(width - 1, x.dtype))
    y0f, x0f = tf.floor(y), tf.floor(xx)
    wy, wx = (y - y0f)[..., None], (xx - x0f)[..., None]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, height - 1), tf.minimum(x0 + 1, width - 1)
    image = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(y0))
    flat = tf.reshape(x, [-1, channels])

    def at(r: Any, c: Any) -> Any:
        return tf.gather(flat, (image * height + r) * width + c)

    return (
        at(y0, x0) * (1 - wy) * (1 - wx)
        + at(y0, x1) * (1 - wy) * wx
        + at(y1, x0) * wy * (1 - wx)
        + at(y1, x1) * wy * wx
    )
