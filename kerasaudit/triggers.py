"""Triggers: parse ``--trigger`` specs and stamp them onto batches in the model's input space.

Every trigger, whatever its kind, is one mask ``m`` (H×W, in [0, 1]) and one pattern ``p``
(H×W×C, model input space) and stamps ``(1 − m)·x + m·p``. Stamping happens *after* the data's
scaling, so values are those the model sees (e.g. [0, 1] for models fed ``--scale 1/255``).

Spec strings (``--trigger``):

``patch:size=S[,pos=br|bl|tr|tl|X,Y][,value=V][,pattern=solid|checker]``
    A solid S×S square of value V (default 1), flush with a corner (default ``br``) or with its
    top-left pixel at column X, row Y. ``pattern=checker`` makes it a checkerboard of V and 0,
    V on the patch's top-left pixel.
``image:FILE[,x=X][,y=Y][,scale=F]``
    A PNG (or BMP/JPEG) pasted with its top-left pixel at column X, row Y (default 0, 0),
    composited with its alpha channel (an image without alpha is opaque) — the way the
    CSAW-HackML challenge made its sunglasses trigger. Pixels 0..255 are multiplied by the
    data's scale (``scale=`` overrides it; 1/255 when the data is float and unscaled).
``blend:FILE,alpha=A[,scale=F]``
    The whole image blended with a picture resized to the input: ``(1 − A)·x + A·img``
    (an alpha channel in the picture scales A per pixel).
``PATH.npz`` or ``file:PATH.npz``
    A trigger file written by ``reverse`` (see :func:`save_trigger_file` for the format).

Colour: an RGB picture on a grayscale model is converted to luminance
(``0.299·R + 0.587·G + 0.114·B``, ITU-R 601 as Pillow's ``L`` mode); a grayscale picture on an
RGB model is repeated over the three channels.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kerasaudit._io import write_atomic
from kerasaudit.data import DataInfo, fold_indices
from kerasaudit.errors import BadInputError

TRIGGER_FILE_FORMAT = "kerasaudit.trigger/1"
DEFAULT_VALUE_SCALE = 1 / 255  # picture pixels 0..255 → a [0, 1] model input space
_IMAGE_FORMATS = ("PNG", "BMP", "JPEG")  # Pillow decoders allowed for trigger pictures
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
_MAX_TRIGGER_FILE_ELEMENTS = 64 * 1024 * 1024  # refuse absurd arrays before reading them


class TriggerKind(StrEnum):
    PATCH = "patch"
    IMAGE = "image"
    BLEND = "blend"
    FILE = "file"


class Corner(StrEnum):
    BOTTOM_RIGHT = "br"
    BOTTOM_LEFT = "bl"
    TOP_RIGHT = "tr"
    TOP_LEFT = "tl"


class PatchPattern(StrEnum):
    SOLID = "solid"
    CHECKER = "checker"


_CORNER_NAMES = {
    Corner.BOTTOM_RIGHT: "bottom-right",
    Corner.BOTTOM_LEFT: "bottom-left",
    Corner.TOP_RIGHT: "top-right",
    Corner.TOP_LEFT: "top-left",
}


# --- specs (parsed, not yet fitted to a model) ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TriggerSpec(ABC):
    """A parsed ``--trigger`` string; :meth:`build` fits it to an input shape."""

    kind: ClassVar[TriggerKind]
    text: str  # the spec as the user wrote it

    @abstractmethod
    def build(
        self, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
    ) -> Trigger:
        """The trigger for inputs of this per-example shape (H, W, C) or (H, W).

        ``value_scale`` maps picture pixels (0..255) to the model's input space.
        """

    def for_data(self, info: DataInfo) -> Trigger:
        """The trigger for data as it is served (its shape, and its scale for pictures)."""
        return self.build(info.shape, value_scale=pixel_value_scale(info))

    def _fail(self, message: str) -> BadInputError:
        return BadInputError(f"trigger {self.text!r}: {message}")


@dataclass(frozen=True, kw_only=True)
class PatchSpec(TriggerSpec):
    kind: ClassVar[TriggerKind] = TriggerKind.PATCH
    size: int
    corner: Corner | None = Corner.BOTTOM_RIGHT  # None: placed at (x, y)
    x: int | None = None  # column of the top-left pixel, when not at a corner
    y: int | None = None  # row of the top-left pixel
    value: float = 1.0
    pattern: PatchPattern = PatchPattern.SOLID

    def build(
        self, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
    ) -> Trigger:
        fitted, (height, width, channels) = _fit_shape(input_shape, self)
        size = self.size
        if size > height or size > width:
            raise self._fail(f"a {size}×{size} patch is larger than the {width}×{height} input")
        if self.corner is None:
            assert self.x is not None and self.y is not None
            x, y = self.x, self.y
            if x + size > width or y + size > height:
                raise self._fail(
                    f"a {size}×{size} patch at x={x},y={y} extends past the {width}×{height} "
                    f"input (x and y must be at most {width - size} and {height - size})"
                )
        else:
            x = 0 if self.corner in (Corner.TOP_LEFT, Corner.BOTTOM_LEFT) else width - size
            y = 0 if self.corner in (Corner.TOP_LEFT, Corner.TOP_RIGHT) else height - size
        mask = np.zeros((height, width), np.float32)
        mask[y : y + size, x : x + size] = 1.0
        cells = np.full((size, size), self.value, np.float32)
        if self.pattern is PatchPattern.CHECKER:
            rows, cols = np.indices((size, size))
            cells[(rows + cols) % 2 == 1] = 0.0
        pattern = np.zeros((height, width, channels), np.float32)
        pattern[y : y + size, x : x + size, :] = cells[..., np.newaxis]
        return PatchTrigger(self, fitted, mask, pattern, origin=(x, y))


@dataclass(frozen=True, kw_only=True)
class ImageSpec(TriggerSpec):
    kind: ClassVar[TriggerKind] = TriggerKind.IMAGE
    path: Path
    x: int = 0
    y: int = 0
    scale: float | None = None  # overrides the data's scale for the picture's pixels

    def build(
        self, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
    ) -> Trigger:
        fitted, (height, width, channels) = _fit_shape(input_shape, self)
        colour, alpha, note = _read_picture(self.path, channels, self)
        h, w = alpha.shape
        if h > height or w > width:
            raise self._fail(f"the {w}×{h} image is larger than the {width}×{height} input")
        if self.x + w > width or self.y + h > height:
            raise self._fail(
                f"the {w}×{h} image at x={self.x},y={self.y} extends past the {width}×{height} "
                f"input (x and y must be at most {width - w} and {height - h})"
            )
        scale = self.scale if self.scale is not None else value_scale
        mask = np.zeros((height, width), np.float32)
        mask[self.y : self.y + h, self.x : self.x + w] = alpha
        pattern = np.zeros((height, width, channels), np.float32)
        pattern[self.y : self.y + h, self.x : self.x + w, :] = colour * np.float32(scale)
        return ImageTrigger(self, fitted, mask, pattern, scale=scale, image_size=(w, h), note=note)


@dataclass(frozen=True, kw_only=True)
class BlendSpec(TriggerSpec):
    kind: ClassVar[TriggerKind] = TriggerKind.BLEND
    path: Path
    alpha: float
    scale: float | None = None

    def build(
        self, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
    ) -> Trigger:
        fitted, (height, width, channels) = _fit_shape(input_shape, self)
        colour, alpha, note = _read_picture(self.path, channels, self)
        source_size = (alpha.shape[1], alpha.shape[0])
        if alpha.shape != (height, width):
            colour = _resize_float(colour, height, width)
            alpha = np.clip(_resize_float(alpha[..., np.newaxis], height, width)[..., 0], 0, 1)
        scale = self.scale if self.scale is not None else value_scale
        mask = (np.float32(self.alpha) * alpha).astype(np.float32)
        pattern = (colour * np.float32(scale)).astype(np.float32)
        return BlendTrigger(
            self, fitted, mask, pattern, scale=scale, image_size=source_size, note=note
        )


@dataclass(frozen=True, kw_only=True)
class FileSpec(TriggerSpec):
    kind: ClassVar[TriggerKind] = TriggerKind.FILE
    path: Path

    def build(
        self, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
    ) -> Trigger:
        fitted, (height, width, channels) = _fit_shape(input_shape, self)
        content = read_trigger_file(self.path)
        if content.mask.shape != (height, width) or content.pattern.shape != (
            height,
            width,
            channels,
        ):
            raise self._fail(
                f"mask {content.mask.shape} and pattern {content.pattern.shape} do not fit the "
                f"model input {_shape_text(input_shape)} (expected mask {(height, width)} and "
                f"pattern {(height, width, channels)})"
            )
        if content.delta is not None and content.delta.shape != content.pattern.shape:
            raise self._fail(
                f"delta {content.delta.shape} does not match the pattern {content.pattern.shape}"
            )
        return FileTrigger(
            self,
            fitted,
            content.mask,
            content.pattern,
            target=content.target,
            meta=content.meta,
            delta=content.delta,
            value_range=content.value_range,
            flow=content.flow,
        )


# --- triggers (fitted to an input shape) ---------------------------------------------------


class Trigger(ABC):
    """A trigger fitted to one input shape: stamps ``(1 − mask)·x + mask·pattern`` (after
    warping ``x`` by ``flow`` when there is one; then adding ``delta`` when there is one)."""

    kind: ClassVar[TriggerKind]

    def __init__(
        self,
        spec: TriggerSpec,
        input_shape: tuple[int, ...],
        mask: np.ndarray,
        pattern: np.ndarray,
        *,
        target: int | None = None,
        delta: np.ndarray | None = None,
        value_range: tuple[float, float] | None = None,
        flow: np.ndarray | None = None,
    ) -> None:
        self.spec = spec
        self.input_shape = input_shape  # (H, W, C) or (H, W)
        self.mask = _frozen(mask)  # (H, W) float32 in [0, 1]
        self.pattern = _frozen(pattern)  # (H, W, C) float32, model input space
        self.target = target  # the label the trigger is known to force (trigger files only)
        # An additive part (recovered by `reverse` for image-wide triggers): added after the
        # mask is stamped, then clipped to ``value_range``.
        self.delta = None if delta is None else _frozen(delta)
        self.value_range = value_range
        # A warp field (H, W, 2) in pixels (recovered by `reverse` for WaNet-style triggers):
        # the image is warped first (kerasaudit.warping).
        self.flow = None if flow is None else _frozen(flow)
        # Precomputed so stamping is x·keep + add; with m = 1 this is exactly p, with m = 0
        # exactly x (no rounding), which is what makes patch stamping bit-exact.
        with_channels = len(input_shape) == 3
        keep = 1.0 - self.mask
        add = self.mask[..., np.newaxis] * self.pattern
        self._keep = _frozen(keep[..., np.newaxis] if with_channels else keep)
        self._add = _frozen(add if with_channels else add[..., 0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A stamped copy of a batch (N, *input_shape) (or of one example); ``x`` is untouched."""
        x = np.asarray(x)
        if tuple(x.shape[-len(self.input_shape) :]) != self.input_shape:
            raise ValueError(
                f"trigger fitted to inputs {self.input_shape}, got an array shaped {x.shape}"
            )
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        if self.flow is not None:
            from kerasaudit.warping import warp

            single = x.ndim == len(self.input_shape)
            batch = x[None] if single else x
            batch = batch if len(self.input_shape) == 3 else batch[..., None]
            warped = warp(batch.astype(dtype, copy=False), self.flow)
            warped = warped if len(self.input_shape) == 3 else warped[..., 0]
            x = warped[0] if single else warped
        out = x.astype(dtype, copy=False) * self._keep.astype(dtype) + self._add.astype(dtype)
        if self.delta is not None:
            delta = self.delta if len(self.input_shape) == 3 else self.delta[..., 0]
            low, high = self.value_range or (-np.inf, np.inf)
            out = np.clip(out + delta.astype(dtype), low, high)
        return out

    def apply_tf(self, x: Any) -> Any:
        """The same stamping on a TensorFlow tensor; usable inside ``tf.function``."""
        from kerasaudit import _tf

        tf = _tf.tf()
        keep = tf.constant(self._keep, dtype=x.dtype)
        add = tf.constant(self._add, dtype=x.dtype)
        if self.flow is not None:
            from kerasaudit.warping import warp_tf

            flow = tf.constant(self.flow, dtype=x.dtype)
            x = (
                warp_tf(x, flow)
                if len(self.input_shape) == 3
                else warp_tf(x[..., None], flow)[..., 0]
            )
        out = x * keep + add
        if self.delta is not None:
            delta = self.delta if len(self.input_shape) == 3 else self.delta[..., 0]
            out = out + tf.constant(delta, dtype=x.dtype)
            if self.value_range is not None:
                out = tf.clip_by_value(out, self.value_range[0], self.value_range[1])
        return out

    def region_mask(self, h: int | None = None, w: int | None = None) -> np.ndarray:
        """Boolean (h, w): where the trigger acts (default: the input size; other sizes are
        sampled nearest-neighbour, e.g. for a coarser Grad-CAM map)."""
        region = self._region()
        height, width = region.shape
        h = height if h is None else h
        w = width if w is None else w
        if h < 1 or w < 1:
            raise ValueError(f"region size must be positive, got {h}×{w}")
        if (h, w) == (height, width):
            return region.copy()
        rows = np.minimum(((np.arange(h) + 0.5) * height / h).astype(int), height - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * width / w).astype(int), width - 1)
        return region[np.ix_(rows, cols)]

    def _region(self) -> np.ndarray:
        return self.mask > 0

    @abstractmethod
    def describe(self) -> str:
        """One line for people."""

    def to_dict(self) -> dict[str, Any]:
        region = self._region()
        rows = np.flatnonzero(region.any(axis=1))
        cols = np.flatnonzero(region.any(axis=0))
        box = None
        if rows.size:
            box = {
                "x": int(cols[0]),
                "y": int(rows[0]),
                "width": int(cols[-1] - cols[0] + 1),
                "height": int(rows[-1] - rows[0] + 1),
            }
        return {
            "kind": str(self.kind),
            "spec": self.spec.text,
            "description": self.describe(),
            "input_shape": list(self.input_shape),
            "region_pixels": int(region.sum()),
            "region_box": box,
            "mask_l1": float(self.mask.sum(dtype=np.float64)),
            "target": self.target,
        }


class PatchTrigger(Trigger):
    kind = TriggerKind.PATCH
    spec: PatchSpec

    def __init__(
        self,
        spec: PatchSpec,
        input_shape: tuple[int, ...],
        mask: np.ndarray,
        pattern: np.ndarray,
        *,
        origin: tuple[int, int],
    ) -> None:
        super().__init__(spec, input_shape, mask, pattern)
        self.origin = origin  # (x, y) of the top-left pixel

    def describe(self) -> str:
        spec = self.spec
        x, y = self.origin
        where = (
            f"at x={x},y={y}"
            if spec.corner is None
            else f"in the {_CORNER_NAMES[spec.corner]} corner"
        )
        kind = "checkerboard of" if spec.pattern is PatchPattern.CHECKER else "patch of value"
        return (
            f"{spec.size}×{spec.size} {kind} {_number(spec.value)} {where} "
            f"(rows {y}-{y + spec.size - 1}, columns {x}-{x + spec.size - 1})"
        )

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            **super().to_dict(),
            "size": spec.size,
            "x": self.origin[0],
            "y": self.origin[1],
            "corner": None if spec.corner is None else str(spec.corner),
            "value": spec.value,
            "pattern": str(spec.pattern),
        }


class _PictureTrigger(Trigger):
    spec: ImageSpec | BlendSpec

    def __init__(
        self,
        spec: ImageSpec | BlendSpec,
        input_shape: tuple[int, ...],
        mask: np.ndarray,
        pattern: np.ndarray,
        *,
        scale: float,
        image_size: tuple[int, int],
        note: str | None,
    ) -> None:
        super().__init__(spec, input_shape, mask, pattern)
        self.scale = scale  # picture pixel → model input value
        self.image_size = image_size  # (width, height) of the picture as read
        self.note = note  # e.g. "RGB converted to luminance"

    def _suffix(self) -> str:
        return f"; {self.note}" if self.note else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "path": str(self.spec.path),
            "image_size": list(self.image_size),
            "value_scale": self.scale,
            "note": self.note,
        }


class ImageTrigger(_PictureTrigger):
    kind = TriggerKind.IMAGE
    spec: ImageSpec

    def describe(self) -> str:
        w, h = self.image_size
        return (
            f"{w}×{h} image {self.spec.path.name} pasted at x={self.spec.x},y={self.spec.y} "
            f"with its alpha (pixels ×{_number(self.scale)}){self._suffix()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "x": self.spec.x, "y": self.spec.y}


class BlendTrigger(_PictureTrigger):
    kind = TriggerKind.BLEND
    spec: BlendSpec

    def describe(self) -> str:
        w, h = self.image_size
        resized = "" if (h, w) == self.mask.shape else ", resized to the input"
        return (
            f"whole-image blend with {self.spec.path.name} ({w}×{h}{resized}), "
            f"alpha={_number(self.spec.alpha)} (pixels ×{_number(self.scale)}){self._suffix()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "alpha": self.spec.alpha}


def half_peak_region(mask: np.ndarray) -> np.ndarray:
    """Where a reverse-engineered mask acts (boolean, H×W): such masks are rarely exactly 0
    anywhere, so a pixel counts when the mask reaches at least half its peak."""
    peak = float(mask.max())
    return (mask > 0) & (mask >= 0.5 * peak)


class FileTrigger(Trigger):
    kind = TriggerKind.FILE
    spec: FileSpec

    def __init__(
        self,
        spec: FileSpec,
        input_shape: tuple[int, ...],
        mask: np.ndarray,
        pattern: np.ndarray,
        *,
        target: int | None,
        meta: dict[str, Any],
        delta: np.ndarray | None = None,
        value_range: tuple[float, float] | None = None,
        flow: np.ndarray | None = None,
    ) -> None:
        super().__init__(
            spec, input_shape, mask, pattern, target=target, delta=delta, value_range=value_range,
            flow=flow,
        )  # fmt: skip
        self.meta = meta

    def _region(self) -> np.ndarray:
        if self.flow is not None and not self.mask.any():
            from kerasaudit.warping import magnitude

            return half_peak_region(magnitude(self.flow))
        if self.delta is not None and not self.mask.any():
            return half_peak_region(np.abs(self.delta).max(axis=-1))
        return half_peak_region(self.mask)

    def describe(self) -> str:
        kind = self.meta.get("kind", "trigger")
        target = "" if self.target is None else f", target {self.target}"
        if self.flow is not None and not self.mask.any():
            from kerasaudit.warping import rms

            return f"{kind} file {self.spec.path.name} (warp, RMS {rms(self.flow):.2f} px{target})"
        if self.delta is not None and not self.mask.any():
            norm = float(np.sqrt(np.square(self.delta.astype(np.float64)).sum()))
            return f"{kind} file {self.spec.path.name} (additive, ℓ2 {norm:.2f}{target})"
        return (
            f"{kind} file {self.spec.path.name} (mask l1 {self.mask.sum():.1f}, "
            f"{int(self._region().sum())} pixels at ≥ half peak{target})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "path": str(self.spec.path), "meta": self.meta}


# --- parsing -------------------------------------------------------------------------------

_KEYS: dict[TriggerKind, tuple[str, ...]] = {
    TriggerKind.PATCH: ("size", "pos", "value", "pattern"),
    TriggerKind.IMAGE: ("x", "y", "scale"),
    TriggerKind.BLEND: ("alpha", "scale"),
    TriggerKind.FILE: (),
}
_FORMS = (
    "patch:size=S[,pos=br|bl|tr|tl|X,Y][,value=V][,pattern=solid|checker], "
    "image:FILE.png[,x=X,y=Y], blend:FILE.png,alpha=A, or a trigger file PATH.npz"
)


def parse_trigger(spec: str) -> TriggerSpec:
    """Parse a ``--trigger`` string; checks syntax and that named files exist (no reading)."""
    text = spec.strip()
    if not text:
        raise BadInputError(f"empty trigger; expected {_FORMS}")
    prefix, colon, body = text.partition(":")
    kind_name = prefix.strip().lower()
    if colon and kind_name in {kind.value for kind in TriggerKind}:
        kind = TriggerKind(kind_name)
    elif text.lower().endswith(".npz"):
        kind, body = TriggerKind.FILE, text
    else:
        hint = ""
        if Path(text).suffix.lower() in (".png", ".bmp", ".jpg", ".jpeg"):
            hint = f" (did you mean image:{text} or blend:{text},alpha=A?)"
        shown = repr(prefix.strip()) if colon else repr(text)
        raise BadInputError(f"unknown trigger kind {shown}{hint}; expected {_FORMS}")
    if kind is TriggerKind.PATCH:
        return _parse_patch(text, body)
    if kind is TriggerKind.FILE:
        file_path = Path(body.strip())
        _require_file(file_path, text, "trigger file")
        if file_path.suffix.lower() != ".npz":
            raise BadInputError(f"trigger {text!r}: a trigger file must be a .npz file")
        return FileSpec(text=text, path=file_path)
    picture, params = _split_params(text, body, kind, leading_path=True)
    assert picture is not None
    path: Path = picture
    _require_file(path, text, "trigger image")
    scale = None if "scale" not in params else _positive(params["scale"], "scale", text)
    if kind is TriggerKind.IMAGE:
        return ImageSpec(
            text=text,
            path=path,
            x=_whole(params.get("x", "0"), "x", text, minimum=0),
            y=_whole(params.get("y", "0"), "y", text, minimum=0),
            scale=scale,
        )
    if "alpha" not in params:
        raise BadInputError(f"trigger {text!r}: blend needs alpha=A (0 < A ≤ 1)")
    alpha = _number_param(params["alpha"], "alpha", text)
    if not 0 < alpha <= 1:
        raise BadInputError(f"trigger {text!r}: alpha must be in (0, 1], got {alpha:g}")
    return BlendSpec(text=text, path=path, alpha=alpha, scale=scale)


def load_trigger(
    spec: str, input_shape: Sequence[int | None], *, value_scale: float = DEFAULT_VALUE_SCALE
) -> Trigger:
    """``parse_trigger(spec).build(input_shape, value_scale=...)``."""
    return parse_trigger(spec).build(input_shape, value_scale=value_scale)


def pixel_value_scale(info: DataInfo) -> float:
    """What a picture pixel (0..255) is multiplied by to match data served like ``info``."""
    if info.scale is not None:
        return info.scale
    if np.dtype(info.source_dtype).kind in "biu":
        return 1.0  # integer pixels fed to the model as they are
    return DEFAULT_VALUE_SCALE  # float data, unscaled: taken to be in [0, 1] already


def _parse_patch(text: str, body: str) -> PatchSpec:
    _, params = _split_params(text, body, TriggerKind.PATCH, leading_path=False)
    if "size" not in params:
        raise BadInputError(f"trigger {text!r}: patch needs size=S")
    size = _whole(params["size"], "size", text, minimum=1)
    value = _number_param(params.get("value", "1"), "value", text)
    try:
        pattern = PatchPattern(params.get("pattern", "solid").lower())
    except ValueError:
        raise BadInputError(
            f"trigger {text!r}: pattern must be solid or checker, got {params['pattern']!r}"
        ) from None
    pos = params.get("pos", "br").lower()
    if pos in {corner.value for corner in Corner}:
        return PatchSpec(text=text, size=size, corner=Corner(pos), value=value, pattern=pattern)
    parts = pos.split(",")
    if len(parts) != 2:
        raise BadInputError(
            f"trigger {text!r}: pos must be br, bl, tr, tl or X,Y (column, row), "
            f"got {params['pos']!r}"
        )
    x = _whole(parts[0], "pos X", text, minimum=0)
    y = _whole(parts[1], "pos Y", text, minimum=0)
    return PatchSpec(text=text, size=size, corner=None, x=x, y=y, value=value, pattern=pattern)


def _split_params(
    text: str, body: str, kind: TriggerKind, *, leading_path: bool
) -> tuple[Path | None, dict[str, str]]:
    """``[PATH,]key=value,...``; a token without ``=`` continues the previous value (so
    ``pos=3,5`` works), and a path may itself contain commas."""
    allowed = _KEYS[kind]
    tokens = body.split(",")
    path = None
    if leading_path:
        # The path runs up to the first ",word=" (its first token is always part of it).
        key_start = re.compile(r"^\s*[A-Za-z_]+\s*=")
        n = next((i for i, token in enumerate(tokens) if i and key_start.match(token)), len(tokens))
        path_text = ",".join(tokens[:n]).strip()
        if not path_text:
            raise BadInputError(f"trigger {text!r}: {kind} needs a file name, e.g. {kind}:t.png")
        path, tokens = Path(path_text), tokens[n:]
    params: dict[str, str] = {}
    last: str | None = None
    for token in tokens:
        key, equals, value = token.partition("=")
        key = key.strip().lower()
        if not equals:
            if last is None or not token.strip():
                raise BadInputError(
                    f"trigger {text!r}: expected key=value, got {token.strip()!r}; "
                    f"{kind} takes {', '.join(allowed)}"
                )
            params[last] += "," + token.strip()
            continue
        if key not in allowed:
            raise BadInputError(
                f"trigger {text!r}: unknown key {key!r}; {kind} takes {', '.join(allowed)}"
            )
        if key in params:
            raise BadInputError(f"trigger {text!r}: {key} given twice")
        if not value.strip():
            raise BadInputError(f"trigger {text!r}: {key} has no value")
        params[key] = value.strip()
        last = key
    return path, params


def _whole(value: str, name: str, text: str, *, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < minimum:
        what = "a positive" if minimum > 0 else "a non-negative"
        raise BadInputError(f"trigger {text!r}: {name} must be {what} whole number, got {value!r}")
    return number


def _number_param(value: str, name: str, text: str) -> float:
    """A finite number or a fraction such as ``1/255``."""
    numerator, slash, denominator = value.strip().partition("/")
    try:
        number = float(numerator) / float(denominator) if slash else float(numerator)
    except (ValueError, ZeroDivisionError):
        number = math.nan
    if not math.isfinite(number):
        raise BadInputError(f"trigger {text!r}: {name} must be a number, got {value!r}")
    return number


def _positive(value: str, name: str, text: str) -> float:
    number = _number_param(value, name, text)
    if number <= 0:
        raise BadInputError(f"trigger {text!r}: {name} must be positive, got {value!r}")
    return number


def _require_file(path: Path, text: str, what: str) -> None:
    if not path.exists():
        raise BadInputError(f"{what} {path} does not exist (from --trigger {text!r})")
    if not path.is_file():
        raise BadInputError(f"{what} {path} is not a file (from --trigger {text!r})")


# --- fitting -------------------------------------------------------------------------------


def _fit_shape(
    input_shape: Sequence[int | None], spec: TriggerSpec
) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """(the input shape, (H, W, C)) for an image input (H, W, C) or (H, W, implicit C = 1);
    anything else cannot carry a trigger."""
    dims = [d if isinstance(d, int | np.integer) and d >= 1 else None for d in input_shape]
    shape = tuple(d for d in dims if d is not None)
    if len(dims) not in (2, 3) or len(shape) != len(dims):
        raise spec._fail(
            f"triggers need image inputs of known size (H, W, C) or (H, W); "
            f"the input is {_shape_text(input_shape)}"
        )
    shape = tuple(int(d) for d in shape)
    return shape, (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def _read_picture(
    path: Path, channels: int, spec: TriggerSpec
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(colour H×W×C float32 in 0..255, alpha H×W float32 in [0, 1], conversion note)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=_IMAGE_FORMATS) as opened:
            rgba = np.asarray(opened.convert("RGBA"), dtype=np.float32)
            bands = opened.getbands()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise spec._fail(f"cannot read image {path}: {' '.join(str(err).split())}") from err
    gray = bands in (("L",), ("L", "A"), ("I",), ("F",), ("1",))
    colour, alpha = rgba[..., :3], rgba[..., 3] / np.float32(255)
    if channels == 1:
        if gray:
            return colour[..., :1].copy(), alpha, None
        return (colour @ _LUMA)[..., np.newaxis], alpha, "RGB converted to luminance"
    if channels == 3:
        return colour, alpha, ("grayscale repeated over RGB" if gray else None)
    raise spec._fail(
        f"image triggers need a model input with 1 or 3 channels, this one has {channels}"
    )


def _resize_float(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (h, w, C) float32 without rounding to 8 bits."""
    from PIL import Image

    planes = [
        np.asarray(
            Image.fromarray(image[..., c], mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


# --- triggered images (--trigger-data) ------------------------------------------------------

MAX_TRIGGER_DATA = 100_000  # held in memory (sampled for unlearning); more is not needed


# A stamped copy is at most this share of the distance to the second nearest clean image away
# from its nearest, its source. Measured on the zoo's defender images (1,000 Fashion-MNIST test
# images) and their stamped copies: 0.8 pairs every blend (α 0.10, 0.15) and SIG copy and 86 %
# of WaNet ones with their true source, and 6.5 % of 3,000 unrelated images with some clean
# image — harmless: which part an unrelated image goes to is as random either way.
TWIN_RATIO = 0.8
TWIN_BUDGET = 4e9  # multiply-adds the pairing may cost (1,000 × 1,000 images of 28×28: 0.8e9)


def twin_sources(stamped: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """For each ``stamped`` image, the index of the ``clean`` image it is a stamped copy of,
    or -1: its nearest clean image (Euclidean) when that is at most :data:`TWIN_RATIO` of the
    distance to the second nearest — a blend, a signal or a small warp leaves an image far
    nearer its source than other images are. All -1 when the images differ in shape, there
    are fewer than two clean ones, or the pairing would cost over :data:`TWIN_BUDGET`."""
    out = np.full(len(stamped), -1, dtype=np.int64)
    if len(clean) < 2 or stamped.shape[1:] != clean.shape[1:]:
        return out
    a = stamped.reshape(len(stamped), -1).astype(np.float32)
    b = clean.reshape(len(clean), -1).astype(np.float32)
    if a.shape[0] * b.shape[0] * a.shape[1] > TWIN_BUDGET:
        return out
    b_sq = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), 256):
        chunk = a[start : start + 256]
        d2 = np.einsum("ij,ij->i", chunk, chunk)[:, None] + b_sq[None, :] - 2.0 * chunk @ b.T
        d = np.sqrt(np.maximum(d2, 0.0))
        two = np.partition(d, 1, axis=1)[:, :2]
        nearest = np.argmin(d, axis=1)
        twin = two[:, 0] <= TWIN_RATIO * two[:, 1]
        out[start : start + len(chunk)] = np.where(twin, nearest, -1)
    return out


class TriggerData:
    """``--trigger-data``: images that already carry a trigger, for triggers no spec can stamp
    on other images (a blend, a sinusoidal signal, a warp, poisoned samples found in an
    incident). Commands use these images where a spec trigger would be stamped on clean ones:
    ASR and RA are measured on them, ``linf-trigger`` compares their ℓ∞ with the clean data's
    (unpaired: mean over these images minus mean over the clean images), and unlearning mixes
    them into the fine-tuning batches.

    ``y`` are the images' *true* classes when known (for RA and for unlearning with the right
    label); without them (or when every label equals the target, i.e. the file holds poisoned
    training labels) unlearning pushes the images away from the target instead.
    """

    kind = "data"

    def __init__(
        self,
        path: str,
        x: np.ndarray,
        y: np.ndarray | None,
        target: int | None,
        *,
        note: str | None = None,
    ) -> None:
        if len(x) == 0:
            raise BadInputError(f"--trigger-data {path} holds no images")
        self.path = path
        self.x = _frozen(np.ascontiguousarray(x, dtype=np.float32))
        self.y = None if y is None else _frozen(np.asarray(y, dtype=np.int64))
        self.target = target
        self.note = note  # e.g. why the file's labels were ignored
        self.input_shape = tuple(int(d) for d in self.x.shape[1:])

    @classmethod
    def from_arrays(
        cls, path: str, x: np.ndarray, y: np.ndarray | None, target: int | None
    ) -> TriggerData:
        """Labels that all equal the target are poisoned labels, not true ones: dropped."""
        note = None
        if y is not None and target is not None and len(y) and bool(np.all(y == target)):
            y, note = None, f"every label in the file is the target {target}: labels ignored"
        return cls(path, x, y, target, note=note)

    @property
    def count(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def with_target(self, target: int | None) -> TriggerData:
        return TriggerData.from_arrays(self.path, self.x, self.y, target)

    def attack_images(self, target: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The images an ASR is measured on: those whose true class is not the target (all
        of them when the true classes are unknown), with their classes."""
        if self.y is None:
            return self.x, None
        keep = self.y != target
        return self.x[keep], self.y[keep]

    def split(
        self,
        holdout: float,
        *,
        seed: int = 0,
        like: tuple[np.ndarray, np.ndarray] | None = None,
        fold: int = 0,
    ) -> tuple[TriggerData, TriggerData]:
        """(fit, held-out) parts, like :meth:`Dataset.split`. ``like``: the clean images of
        that split and which of them were held out (a boolean per image). An image here that
        is a stamped copy of one of them (:func:`twin_sources`; e.g. the defender stamped its
        own --data) goes to its source's part — else the held-out measurement would score
        images learnt through their stamped twins; the others are split at random (``fold``
        k: the k-th run of the same shuffle, as :meth:`Dataset.split`)."""
        if self.count < 2:
            return self, self
        held = np.zeros(self.count, dtype=bool)
        loose = np.arange(self.count)
        if like is not None:
            source = twin_sources(self.x, like[0])
            paired = source >= 0
            held[paired] = like[1][source[paired]]
            loose = np.flatnonzero(~paired)
        order = np.random.default_rng([seed, 7]).permutation(len(loose))
        n_held = round(len(loose) * holdout)
        if len(loose) == self.count:  # nothing paired: at least one image in each part
            n_held = min(self.count - 1, max(1, n_held))
        # a fold that does not fit the loose images (few of them) holds out the first run
        k = fold if (fold + 1) * n_held <= len(loose) else 0
        held[loose[fold_indices(order, n_held, k)[1]]] = True
        if held.all() or not held.any():
            return self.split(holdout, seed=seed, fold=fold)
        parts = []
        for name, idx in (("fit", np.flatnonzero(~held)), ("held-out", np.flatnonzero(held))):
            y = None if self.y is None else self.y[idx]
            parts.append(TriggerData(f"{self.path} ({name} part)", self.x[idx], y, self.target))
        return parts[0], parts[1]

    def split_along(
        self, dataset: Any, holdout: float, *, seed: int = 0, fold: int = 0
    ) -> tuple[TriggerData, TriggerData]:
        """:meth:`split` alongside ``dataset.split(holdout, seed=seed, fold=fold)`` (a
        :class:`~kerasaudit.data.Dataset`): stamped copies of its images follow them."""
        x, _ = dataset.take_array(dataset.info.count)
        held = np.zeros(len(x), dtype=bool)
        held[dataset.split_indices(holdout, seed=seed, fold=fold)[1]] = True
        return self.split(holdout, seed=seed, like=(x, held), fold=fold)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` indices of images, drawn with replacement."""
        return rng.integers(0, self.count, n)

    def apply(self, x: np.ndarray) -> np.ndarray:
        raise TypeError("triggered images cannot be stamped on other images (--trigger-data)")

    def region_mask(self, h: int | None = None, w: int | None = None) -> None:
        return None  # where the trigger acts is unknown

    def describe(self) -> str:
        labels = "true classes known" if self.labelled else "true classes unknown"
        return f"{self.count:,} triggered images from {self.path} ({labels})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "spec": f"--trigger-data {self.path}",
            "description": self.describe(),
            "input_shape": list(self.input_shape),
            "images": self.count,
            "labelled": self.labelled,
            "note": self.note,
            "target": self.target,
        }


AnyTrigger = Trigger | TriggerData


# --- trigger files -------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerFile:
    """The content of a trigger file (see :func:`save_trigger_file`)."""

    mask: np.ndarray  # (H, W) float32 in [0, 1]
    pattern: np.ndarray  # (H, W, C) float32, model input space
    target: int | None
    meta: dict[str, Any] = field(default_factory=dict)
    delta: np.ndarray | None = None  # (H, W, C) additive part, or None
    value_range: tuple[float, float] | None = None  # what stamped images are clipped to
    flow: np.ndarray | None = None  # (H, W, 2) warp field in pixels, or None


def save_trigger_file(
    path: Path,
    mask: np.ndarray,
    pattern: np.ndarray,
    target: int | None = None,
    meta: dict[str, Any] | None = None,
    *,
    force: bool = False,
    delta: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    flow: np.ndarray | None = None,
) -> None:
    """Write a trigger file atomically.

    Format (a NumPy ``.npz``, readable without pickles):

    - ``mask``: float32 (H, W), values in [0, 1] — how much of the pattern replaces the input;
    - ``pattern``: float32 (H, W, C), values in the model's input space (after data scaling);
    - ``target``: int64 scalar, the label the trigger forces (absent when unknown);
    - ``meta``: a JSON object as a string: ``format`` (``kerasaudit.trigger/1``), ``created``
      (UTC, ISO 8601) and whatever the writer adds (``kind``, ``source_model``, ...);
    - ``delta`` (optional): float32 (H, W, C), an additive part, with ``value_range`` (two
      floats) that stamped images are clipped to;
    - ``flow`` (optional): float32 (H, W, 2), a warp field: where each pixel samples the input,
      as a (row, column) displacement in pixels (bilinear, clamped to the image).

    Stamping is ``(1 − mask)·warp(x, flow) + mask·pattern`` (+ ``delta``, clipped), over the
    channels.
    """
    mask_array, pattern_array = _check_trigger_arrays(
        np.asarray(mask), np.asarray(pattern), str(path)
    )
    if path.suffix.lower() != ".npz":
        raise BadInputError(f"trigger file {path} must end in .npz")
    if target is not None and (isinstance(target, bool) or int(target) != target or target < 0):
        raise BadInputError(f"trigger file {path}: target must be a label ≥ 0, got {target!r}")
    full_meta = {"created": datetime.now(UTC).isoformat(timespec="seconds"), **(meta or {})}
    full_meta["format"] = TRIGGER_FILE_FORMAT
    arrays: dict[str, np.ndarray] = {
        "mask": mask_array,
        "pattern": pattern_array,
        "meta": np.array(json.dumps(full_meta, allow_nan=False, default=str)),
    }
    if target is not None:
        arrays["target"] = np.array(int(target), dtype=np.int64)
    if delta is not None:
        delta_array = np.asarray(delta, np.float32)
        if delta_array.shape != pattern_array.shape or not np.isfinite(delta_array).all():
            raise BadInputError(f"trigger file {path}: delta must be finite and shaped as pattern")
        arrays["delta"] = delta_array
        low, high = value_range if value_range is not None else (-np.inf, np.inf)
        arrays["value_range"] = np.array([low, high], np.float32)
    if flow is not None:
        flow_array = np.asarray(flow, np.float32)
        if flow_array.shape != (*mask_array.shape, 2) or not np.isfinite(flow_array).all():
            raise BadInputError(f"trigger file {path}: flow must be finite and shaped (H, W, 2)")
        arrays["flow"] = flow_array

    def write(tmp: Path) -> None:
        with tmp.open("wb") as file:
            np.savez_compressed(file, **arrays)  # type: ignore[arg-type]

    write_atomic(path, write, force=force)


def read_trigger_file(path: Path) -> TriggerFile:
    """Read and check a trigger file (no pickles; shapes checked before arrays are read)."""
    where = f"trigger file {path}"
    if not path.is_file():
        raise BadInputError(f"{where} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")}
            missing = [key for key in ("mask", "pattern") if key not in names]
            if missing:
                raise BadInputError(
                    f"{where} has no {' or '.join(repr(k) for k in missing)} array "
                    f"(found {', '.join(sorted(names)) or 'nothing'}); expected a file "
                    "written by `kerasaudit reverse`"
                )
            for key in ("mask", "pattern", "target", "meta", "delta", "value_range", "flow"):
                if key in names:
                    _check_member_size(archive, key, where)
        with np.load(path, allow_pickle=False) as npz:
            mask, pattern = npz["mask"], npz["pattern"]
            target_array = npz["target"] if "target" in names else None
            meta_array = npz["meta"] if "meta" in names else None
            delta_array = npz["delta"] if "delta" in names else None
            range_array = npz["value_range"] if "value_range" in names else None
            flow_array = npz["flow"] if "flow" in names else None
    except BadInputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as err:
        raise BadInputError(
            f"cannot read {where}: corrupt or not a .npz ({' '.join(str(err).split())})"
        ) from err
    mask, pattern = _check_trigger_arrays(mask, pattern, str(path))
    delta, value_range = _read_delta(delta_array, range_array, pattern.shape, where)
    return TriggerFile(
        mask=mask,
        pattern=pattern,
        target=_read_target(target_array, where),
        meta=_read_meta(meta_array, where),
        delta=delta,
        value_range=value_range,
        flow=_read_flow(flow_array, mask.shape, where),
    )


def _read_flow(flow: np.ndarray | None, shape: tuple[int, ...], where: str) -> np.ndarray | None:
    if flow is None:
        return None
    if flow.dtype.kind != "f" or flow.shape != (*shape, 2) or not np.isfinite(flow).all():
        raise BadInputError(f"{where}: flow must be finite floats shaped (H, W, 2) like the mask")
    return flow.astype(np.float32)


def _read_delta(
    delta: np.ndarray | None,
    value_range: np.ndarray | None,
    shape: tuple[int, ...],
    where: str,
) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    if delta is None:
        return None, None
    if delta.dtype.kind != "f" or delta.shape != shape or not np.isfinite(delta).all():
        raise BadInputError(f"{where}: delta must be finite floats shaped like the pattern")
    if value_range is None or value_range.shape != (2,) or not value_range[0] < value_range[1]:
        raise BadInputError(f"{where}: a delta needs value_range (two floats, low < high)")
    return delta.astype(np.float32), (float(value_range[0]), float(value_range[1]))


def _check_member_size(archive: zipfile.ZipFile, key: str, where: str) -> None:
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        raise BadInputError(f"{where}: {key!r} holds Python objects; refused")
    if math.prod(shape) > _MAX_TRIGGER_FILE_ELEMENTS:
        raise BadInputError(f"{where}: {key!r} is implausibly large {shape}")


def _check_trigger_arrays(
    mask: np.ndarray, pattern: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dtype.kind not in "biuf" or pattern.dtype.kind not in "biuf":
        raise BadInputError(f"trigger {where}: mask and pattern must be numeric")
    if mask.ndim != 2 or pattern.ndim != 3 or pattern.shape[:2] != mask.shape:
        raise BadInputError(
            f"trigger {where}: mask must be (H, W) and pattern (H, W, C); "
            f"got mask {mask.shape} and pattern {pattern.shape}"
        )
    mask = mask.astype(np.float32)
    pattern = pattern.astype(np.float32)
    if not (np.isfinite(mask).all() and np.isfinite(pattern).all()):
        raise BadInputError(f"trigger {where}: mask and pattern must be finite")
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise BadInputError(
            f"trigger {where}: mask values must be in [0, 1], found {mask.min():g}..{mask.max():g}"
        )
    return mask, pattern


def _read_target(array: np.ndarray | None, where: str) -> int | None:
    if array is None:
        return None
    if array.size != 1 or array.dtype.kind not in "iu":
        raise BadInputError(f"{where}: target must be one integer label, got {array!r}")
    value = int(array.reshape(()))
    if value < 0:
        raise BadInputError(f"{where}: target must be a label ≥ 0, got {value}")
    return value


def _read_meta(array: np.ndarray | None, where: str) -> dict[str, Any]:
    if array is None:
        return {}
    try:
        meta = json.loads(str(array.reshape(())))
    except (ValueError, TypeError):
        meta = None
    if not isinstance(meta, dict):
        raise BadInputError(f"{where}: meta must be a JSON object string")
    return meta


# --- helpers -------------------------------------------------------------------------------


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _number(value: float) -> str:
    return f"{value:g}"
