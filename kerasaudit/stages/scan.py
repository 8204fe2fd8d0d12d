"""Scan: per-channel ℓ1 / ℓ2 / ℓ∞ activation statistics of every auditable layer, in one pass.

How it stays close to the cost of one forward pass:

* The model's graph is replayed layer by layer inside one ``tf.function`` (nested Sequential and
  Functional models are flattened into it), so a single forward pass yields every measured
  tensor: no per-layer sub-models, no second pass.
* Each measured activation map is reduced *inside* that compiled step to a few numbers per
  channel (Σ|a|, Σa², max|a| over the map, then sums and maxima over the batch), so only
  per-channel vectors leave the device, and they are accumulated there in float64.
* Nothing is kept per image: memory does not grow with the number of images.

What is measured for each auditable layer is the tensor the next layer sees
(``AuditableLayer.measured_after``): after the conv's own activation, or after its
BatchNormalization and activation layer when a block has them.

Statistics are sums, sums of squares, maxima and counts, so scans of shards of a data set merge
exactly (:func:`merge`); :func:`save_stats` / :func:`load_stats` keep them on disk.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit import __version__, _tf
from kerasaudit._io import write_atomic
from kerasaudit.errors import BadInputError
from kerasaudit.flags import (
    DEFAULT_THRESHOLD,
    MIN_IMAGES,
    SCORE_DEFINITION,
    LayerFlags,
    flag_channels,
)
from kerasaudit.inventory import (
    NO_CONV_HINT,
    AuditableLayer,
    auditable_layers,
    descendants,
    matching,
    tapped,
    walk_layers,
)
from kerasaudit.model_view import file_name

STATS_SCHEMA = "kerasaudit.stages.scan-stats/1"
ProgressFn = Callable[[int, int | None], None]  # (images done, images in total if known)

# Activations whose output is never negative: for them |a| = a, which saves one pass.
_NONNEGATIVE_ACTIVATIONS = frozenset(
    {"relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "softplus", "exponential"}
)
_ARRAYS = ("sum_l1", "sum_l2", "sum_linf", "sum_linf_sq", "max_linf")


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Mergeable raw statistics of one layer's channels over ``images`` images.

    Per image and channel c the activation map a_c gives ℓ1 = Σ|a_c|, ℓ2 = √Σa_c², ℓ∞ = max|a_c|;
    these are summed over images (ℓ∞ also squared and maximised), float64, shape (channels,).
    """

    layer: str  # path of the auditable layer, e.g. "features/conv1"
    class_name: str
    measured: str  # path of the layer whose output was measured (after BN / activation)
    channels: int
    map_size: int  # activation-map elements per channel (e.g. H·W); 0 if it varied
    images: int
    sum_l1: np.ndarray
    sum_l2: np.ndarray
    sum_linf: np.ndarray
    sum_linf_sq: np.ndarray
    max_linf: np.ndarray

    def _mean(self, total: np.ndarray) -> np.ndarray:
        if self.images == 0:
            return np.full(self.channels, np.nan)
        return total / self.images

    @property
    def mean_l1(self) -> np.ndarray:
        return self._mean(self.sum_l1)

    @property
    def mean_l2(self) -> np.ndarray:
        return self._mean(self.sum_l2)

    @property
    def mean_linf(self) -> np.ndarray:
        return self._mean(self.sum_linf)

    @property
    def std_linf(self) -> np.ndarray:
        """Spread of ℓ∞ over images (population standard deviation)."""
        mean = self.mean_linf
        return np.sqrt(np.maximum(self._mean(self.sum_linf_sq) - mean * mean, 0.0))

    @property
    def linf_over_l2(self) -> np.ndarray:
        """mean ℓ∞ / mean ℓ2: high when a channel's response is a few strong peaks (NaN if dead)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.sum_linf / self.sum_l2
        return np.where(self.sum_l2 > 0, ratio, np.nan)

    def merge(self, other: ChannelStats) -> ChannelStats:
        mine = (self.layer, self.measured, self.channels)
        theirs = (other.layer, other.measured, other.channels)
        if mine != theirs:
            raise BadInputError(f"cannot merge statistics of {theirs} into {mine}")
        return replace(
            self,
            map_size=self.map_size if self.map_size == other.map_size else 0,
            images=self.images + other.images,
            sum_l1=self.sum_l1 + other.sum_l1,
            sum_l2=self.sum_l2 + other.sum_l2,
            sum_linf=self.sum_linf + other.sum_linf,
            sum_linf_sq=self.sum_linf_sq + other.sum_linf_sq,
            max_linf=np.maximum(self.max_linf, other.max_linf),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "class_name": self.class_name,
            "measured": self.measured,
            "channels": self.channels,
            "map_size": self.map_size,
        }


@dataclass(frozen=True, eq=False)
class ScanStats:
    """Everything a scan measured: enough to re-score, save, and merge with other shards."""

    model_name: str
    model_fingerprint: str  # sha256 of the weights: merging needs the same model
    layers: tuple[ChannelStats, ...]
    images: int
    precision: str  # "float32", or the mixed-precision policy used
    sources: tuple[str, ...] = ()  # the data each shard came from

    def layer(self, path: str) -> ChannelStats:
        for stats in self.layers:
            if stats.layer == path:
                return stats
        raise KeyError(path)

    def metadata(self) -> dict[str, Any]:
        return {
            "schema": STATS_SCHEMA,
            "kerasaudit_version": __version__,
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "images": self.images,
            "precision": self.precision,
            "sources": list(self.sources),
            "layers": [layer.describe() for layer in self.layers],
        }


@dataclass(frozen=True)
class DeviceInfo:
    strategy: str  # e.g. "OneDeviceStrategy", "MirroredStrategy"
    replicas: int
    devices: tuple[str, ...]
    precision: str
    jit_compile: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "replicas": self.replicas,
            "devices": list(self.devices),
            "precision": self.precision,
            "jit_compile": self.jit_compile,
        }


@dataclass(frozen=True, eq=False)
class ScanResult:
    stats: ScanStats
    flags: tuple[LayerFlags, ...]  # same order as stats.layers
    threshold: float
    device: DeviceInfo | None = None
    data: dict[str, Any] | None = None  # description of the data (DataInfo fields)
    seconds: float | None = None

    @property
    def flagged_count(self) -> int:
        return sum(len(f.flagged) for f in self.flags)

    @property
    def channel_count(self) -> int:
        return sum(s.channels for s in self.stats.layers)

    @property
    def has_findings(self) -> bool:
        return self.flagged_count > 0

    @property
    def dead_count(self) -> int:
        return sum(len(f.dead) for f in self.flags)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What makes these statistics less trustworthy than they look."""
        out = []
        if self.stats.images < MIN_IMAGES:
            out.append(
                f"only {self.stats.images:,} images: per-channel statistics from fewer than "
                f"{MIN_IMAGES} are noisy; scores may flag channels by chance"
            )
        if self.channel_count and self.dead_count > self.channel_count / 4:
            out.append(
                f"{self.dead_count:,} of {self.channel_count:,} channels are dead on this data "
                "(an untrained or pruned model, or data unlike its training data?)"
            )
        return tuple(out)

    def layer_results(self) -> Iterator[tuple[ChannelStats, LayerFlags]]:
        return zip(self.stats.layers, self.flags, strict=True)

    def top_flagged(self, limit: int | None = None) -> list[tuple[ChannelStats, LayerFlags, int]]:
        """Flagged (layer stats, layer flags, channel), highest score first."""
        found = [(s, f, c) for s, f in self.layer_results() for c in f.flagged]
        found.sort(key=lambda item: -float(item[1].score[item[2]]))
        return found if limit is None else found[:limit]

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for stats, flags in self.layer_results():
            layers.append(
                {
                    **stats.describe(),
                    "flagged_count": len(flags.flagged),
                    "flagged": list(flags.flagged),
                    "dead": list(flags.dead),
                    "note": flags.note,
                    "mean_l1": _floats(stats.mean_l1),
                    "mean_l2": _floats(stats.mean_l2),
                    "mean_linf": _floats(stats.mean_linf),
                    "max_linf": _floats(stats.max_linf),
                    "std_linf": _floats(stats.std_linf),
                    "linf_over_l2": _floats(stats.linf_over_l2),
                    "z_linf": _floats(flags.z_linf),
                    "z_ratio": _floats(flags.z_ratio),
                    "score": _floats(flags.score),
                }
            )
        flagged = [
            {
                "layer": stats.layer,
                "measured": stats.measured,
                "channel": channel,
                "mean_l1": _float(stats.mean_l1[channel]),
                "mean_l2": _float(stats.mean_l2[channel]),
                "mean_linf": _float(stats.mean_linf[channel]),
                "max_linf": _float(stats.max_linf[channel]),
                "linf_over_l2": _float(stats.linf_over_l2[channel]),
                "z_linf": _float(flags.z_linf[channel]),
                "z_ratio": _float(flags.z_ratio[channel]),
                "score": _float(flags.score[channel]),
            }
            for stats, flags, channel in self.top_flagged()
        ]
        return {
            "model": {
                "name": self.stats.model_name,
                "fingerprint": self.stats.model_fingerprint,
            },
            "data": self.data,
            "images": self.stats.images,
            "sources": list(self.stats.sources),
            "device": None if self.device is None else self.device.to_dict(),
            "seconds": self.seconds,
            "threshold": self.threshold,
            "score": SCORE_DEFINITION,
            "summary": {
                "layers": len(self.stats.layers),
                "channels": self.channel_count,
                "flagged": self.flagged_count,
                "dead": self.dead_count,
            },
            "warnings": list(self.warnings),
            "layers": layers,
            "flagged": flagged,
        }


def _float(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [_float(v) for v in values]


# --- analysis, merging, persistence --------------------------------------------------------


def analyse(
    stats: ScanStats,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    device: DeviceInfo | None = None,
    data: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> ScanResult:
    """Score every channel of ``stats`` and flag those above ``threshold``."""
    flags = tuple(
        flag_channels(s.layer, s.mean_linf, s.linf_over_l2, threshold) for s in stats.layers
    )
    return ScanResult(stats, flags, float(threshold), device, data, seconds)


def merge(a: ScanStats, b: ScanStats) -> ScanStats:
    """Combine the statistics of two shards of a data set (exactly: sums add, maxima max)."""
    if a.model_fingerprint != b.model_fingerprint:
        raise BadInputError(
            f"cannot merge statistics of different models ({a.model_name} "
            f"{a.model_fingerprint[:12]} vs {b.model_name} {b.model_fingerprint[:12]})"
        )
    if a.precision != b.precision:
        raise BadInputError(
            f"cannot merge statistics computed in {a.precision} with ones in {b.precision}"
        )
    mine = [(s.layer, s.measured, s.channels) for s in a.layers]
    theirs = [(s.layer, s.measured, s.channels) for s in b.layers]
    if mine != theirs:
        raise BadInputError(
            "cannot merge statistics of different layer selections: "
            f"{[m[0] for m in mine]} vs {[t[0] for t in theirs]}"
        )
    return replace(
        a,
        layers=tuple(x.merge(y) for x, y in zip(a.layers, b.layers, strict=True)),
        images=a.images + b.images,
        sources=a.sources + b.sources,
    )


def save_stats(stats: ScanStats, path: Path, *, force: bool = False) -> None:
    """Write ``stats`` as a NumPy ``.npz`` (arrays ``<i>.sum_l1`` …, JSON metadata in ``meta``),
    atomically; refuses to overwrite ``path`` unless ``force``."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(stats.metadata()).encode("utf-8"), dtype=np.uint8)
    }
    for i, layer in enumerate(stats.layers):
        arrays[f"{i}.images"] = np.asarray(layer.images, dtype=np.int64)
        for name in _ARRAYS:
            arrays[f"{i}.{name}"] = np.asarray(getattr(layer, name), dtype=np.float64)

    def writer(tmp: Path) -> None:
        with tmp.open("wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]

    write_atomic(Path(path), writer, force=force)


def load_stats(path: Path) -> ScanStats:
    """Read statistics written by :func:`save_stats` (no pickles are ever loaded)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as exc:
        raise BadInputError(f"statistics file {path} does not exist") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path} is not a kerasaudit statistics file: {exc}") from exc
    try:
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if meta.get("schema") != STATS_SCHEMA:
            raise ValueError(f"schema is {meta.get('schema')!r}, expected {STATS_SCHEMA!r}")
        layers = []
        for i, info in enumerate(meta["layers"]):
            channels = int(info["channels"])
            values = {name: np.asarray(arrays[f"{i}.{name}"], dtype=np.float64) for name in _ARRAYS}
            for name, value in values.items():
                if value.shape != (channels,):
                    raise ValueError(f"{i}.{name} has shape {value.shape}, expected ({channels},)")
            layers.append(
                ChannelStats(
                    layer=str(info["layer"]),
                    class_name=str(info["class_name"]),
                    measured=str(info["measured"]),
                    channels=channels,
                    map_size=int(info["map_size"]),
                    images=int(arrays[f"{i}.images"]),
                    **values,
                )
            )
        return ScanStats(
            model_name=str(meta["model_name"]),
            model_fingerprint=str(meta["model_fingerprint"]),
            layers=tuple(layers),
            images=int(meta["images"]),
            precision=str(meta["precision"]),
            sources=tuple(str(s) for s in meta.get("sources", [])),
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path} is not a valid kerasaudit statistics file: {exc}") from exc


def model_fingerprint(model: Any) -> str:
    """sha256 over every weight's path, shape, dtype and bytes, as the file holds them (the
    same for a model and its view, :func:`kerasaudit.model_view.file_weights`)."""
    from kerasaudit.model_view import file_weights

    digest = hashlib.sha256()
    for path, weight in file_weights(model):
        value = np.ascontiguousarray(weight)
        digest.update(f"{path}|{value.shape}|{value.dtype}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def model_input_shape(model: Any) -> tuple[int | None, ...]:
    """The per-example input shape of a single-input model (what the data must fit)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise BadInputError(
            f"scan needs a model with exactly one input; {model.name} has {len(inputs)}"
        )
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


# --- layer selection -----------------------------------------------------------------------


def select_layers(
    model: Any, names: Sequence[str] | None = None, *, include_dense: bool = False
) -> list[AuditableLayer]:
    """The auditable layers to scan: all convolutions (pointwise Dense layers among them; every
    Dense with ``include_dense``), or
    those named by path (``features/conv1``) or by a unique bare name (``conv1``)."""
    every = auditable_layers(model, include_dense=True)
    if not names:
        chosen = [a for a in every if include_dense or a.convolutional]
        if not chosen:
            raise BadInputError(
                "the model has no convolutional layers to scan"
                + ("" if include_dense else " (--include-dense scans Dense layers too)")
                + NO_CONV_HINT
            )
        return chosen
    chosen = []
    for name in names:
        matches = matching(every, name)
        if len(matches) != 1:
            known = ", ".join(a.path for a in every) or "none"
            problem = "is ambiguous" if matches else "is not an auditable layer"
            raise BadInputError(f"--layer {name} {problem}; auditable layers: {known}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


# --- the fused pass ------------------------------------------------------------------------


@dataclass
class _Tap:
    target: AuditableLayer
    channel_axis: int  # 1 for channels_first layers, else -1
    nonnegative: bool  # the measured tensor is ≥ 0 (after ReLU etc.): skip |·|
    map_size: int = field(default=0)  # filled in when the step is traced


class Scanner:
    """Build the fused statistics step for a model once; run it over any number of data sets.

    ``strategy`` is a ``tf.distribute`` strategy (default: ``_tf.configure_device("auto")``,
    i.e. every GPU when there are any, else the CPU). With several
    replicas, or with ``mixed_precision``, the model is cloned under the strategy's scope
    (mirrored variables, mixed dtype policy) and the caller's model is left untouched.
    ``jit_compile``: None = XLA on GPUs only (Keras' own "auto" rule).
    """

    def __init__(
        self,
        model: Any,
        *,
        layers: Sequence[str] | None = None,
        include_dense: bool = False,
        strategy: Any = None,
        mixed_precision: bool = False,
        jit_compile: bool | None = None,
    ) -> None:
        tf = _tf.tf()
        self._tf = tf
        self.input_shape = model_input_shape(model)
        self.original = model
        self.strategy = strategy if strategy is not None else _tf.configure_device("auto")
        devices = tuple(str(d) for d in self.strategy.extended.worker_devices)
        on_gpu = any("GPU" in d.upper() for d in devices)
        self.precision = (
            ("mixed_float16" if on_gpu else "mixed_bfloat16") if mixed_precision else "float32"
        )
        self.jit_compile = on_gpu if jit_compile is None else bool(jit_compile)
        self.targets = tuple(select_layers(model, layers, include_dense=include_dense))
        self.model = self._prepare(model)
        self._taps = [self._tap(t) for t in self.targets]
        self._step = self._build_step()
        self.device = DeviceInfo(
            strategy=type(self.strategy).__name__,
            replicas=int(self.strategy.num_replicas_in_sync),
            devices=devices,
            precision=self.precision,
            jit_compile=self.jit_compile,
        )
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.original)
        return self._fingerprint

    # -- set-up --

    def _prepare(self, model: Any) -> Any:
        if self.precision == "float32" and self.strategy.num_replicas_in_sync == 1:
            return model
        keras = _tf.keras()
        policy = self.precision

        def clone_layer(layer: Any) -> Any:
            config = layer.get_config()
            if policy != "float32":
                config["dtype"] = policy
            return layer.__class__.from_config(config)

        try:
            with self.strategy.scope():
                clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
                clone.set_weights(model.get_weights())
        except Exception as exc:
            raise BadInputError(
                f"cannot rebuild the model for {policy} on {self.strategy.num_replicas_in_sync} "
                f"device(s): {type(exc).__name__}: {exc}"
            ) from exc
        return clone

    def _tap(self, target: AuditableLayer) -> _Tap:
        layer = _find(self.model, target.path)
        measured = _find(self.model, target.measured_after)
        axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
        return _Tap(target, axis, _nonnegative(measured))

    def _build_step(self) -> Callable[..., Any]:
        tf = self._tf
        taps = self._taps
        replay = _Replay(self.model, {t.target.measured_after for t in taps})
        strategy = self.strategy

        def replica_step(x: Any) -> tuple[Any, ...]:
            recorded = replay(x)
            norms = [_per_image_norms(tf, recorded, tap) for tap in taps]
            # One (images, all channels) matrix per norm, so the batch reductions are five ops
            # rather than five per layer.
            l1, l2, linf = (tf.concat([n[k] for n in norms], axis=1) for k in range(3))
            count = tf.cast(tf.shape(x)[0], tf.float64)
            return (*_batch_sums(tf, l1, l2, linf), count)

        replica_fn = tf.function(replica_step, jit_compile=self.jit_compile)

        def step(x: Any, acc: tuple[Any, ...]) -> tuple[Any, ...]:
            per_replica = strategy.run(replica_fn, args=(x,))
            new = []
            for i, (value, total) in enumerate(zip(per_replica, acc, strict=True)):
                local = [tf.cast(v, tf.float64) for v in strategy.experimental_local_results(value)]
                if i == 4:  # max ℓ∞ over images
                    new.append(tf.maximum(total, tf.reduce_max(tf.stack(local), axis=0)))
                else:
                    new.append(total + tf.add_n(local))
            return tuple(new)

        if strategy.num_replicas_in_sync > 1:  # batches arrive as PerReplica values
            return tf.function(step, reduce_retracing=True)
        # One trace for every batch size (a partial last batch must not trigger a second one).
        width = sum(t.target.channels for t in taps)
        x_spec = tf.TensorSpec((None, *self.input_shape), tf.float32)
        acc_spec = (*[tf.TensorSpec((width,), tf.float64)] * 5, tf.TensorSpec((), tf.float64))
        return tf.function(step, input_signature=(x_spec, acc_spec))

    # -- running --

    def _batches(
        self, data: Any, batch_size: int
    ) -> tuple[Iterable[Any], int | None, list[BaseException], str]:
        """(batches for the step, number of images if known, failure box, data name)."""
        from kerasaudit.data import Dataset

        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1 and isinstance(data, Dataset):
            # One device and kerasaudit's own reader: batches are read by a Python thread and
            # fed to the step directly. Through tf.data.from_generator the reader ran as a
            # py_func on one of TensorFlow's inter-op threads, and whole scans sometimes ran on
            # one core (wall ≈ CPU time; benchmarks/bench_scan_process.py).
            failure: list[BaseException] = []
            return _read_ahead(data, failure), data.info.count, failure, str(data.info.path)
        dataset, total, failure, name = _as_tf_batches(data, batch_size, self.input_shape)
        if replicas == 1:
            # strategy.run places the batch itself. A distributed iterator would cost
            # 0.1-0.7 s to set up on every call, for nothing.
            return dataset, total, failure, name
        tf = self._tf
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        distributed = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
        return distributed, total, failure, name

    def stats(
        self,
        data: Any,
        *,
        batch_size: int = 128,
        progress: ProgressFn | None = None,
        source: str | None = None,
    ) -> ScanStats:
        """Scan ``data``: a ``kerasaudit.data.Dataset``, a NumPy array of inputs, or a
        ``tf.data.Dataset`` of batches (x or (x, y, ...) elements)."""
        tf = self._tf
        batches, total, failure, default_source = self._batches(data, batch_size)
        width = sum(t.target.channels for t in self._taps)
        with tf.device(self.strategy.extended.worker_devices[0]):
            sums = [tf.zeros([width], tf.float64) for _ in range(5)]
            acc = (*sums, tf.zeros([], tf.float64))
        done = 0
        for batch in batches:
            acc = self._step(batch, acc)
            if progress is not None:
                done += sum(
                    int(v.shape[0]) for v in self.strategy.experimental_local_results(batch)
                )
                progress(done, total)
        if failure:
            raise failure[0]
        host = [np.asarray(a.numpy(), dtype=np.float64) for a in acc]
        images = round(float(host[5]))
        if images == 0:
            raise BadInputError("the data held no images to scan")
        layers = []
        start = 0
        for tap in self._taps:
            stop = start + tap.target.channels
            sums = [h[start:stop].copy() for h in host[:5]]
            layers.append(
                ChannelStats(
                    layer=tap.target.path,
                    class_name=tap.target.class_name,
                    measured=tap.target.measured_after,
                    channels=tap.target.channels,
                    map_size=tap.map_size,
                    images=images,
                    sum_l1=sums[0],
                    sum_l2=sums[1],
                    sum_linf=sums[2],
                    sum_linf_sq=sums[3],
                    max_linf=sums[4],
                )
            )
            start = stop
        return ScanStats(
            model_name=file_name(self.original),
            model_fingerprint=self.fingerprint,
            layers=tuple(layers),
            images=images,
            precision=self.precision,
            sources=(source or default_source,),
        )


def scan(
    model: Any,
    data: Any,
    *,
    layers: Sequence[str] | None = None,
    include_dense: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 128,
    strategy: Any = None,
    mixed_precision: bool = False,
    jit_compile: bool | None = None,
    progress: ProgressFn | None = None,
    source: str | None = None,
) -> ScanResult:
    """One pass over ``data``: per-channel statistics of the chosen layers, scored and flagged."""
    started = time.perf_counter()
    scanner = Scanner(
        model,
        layers=layers,
        include_dense=include_dense,
        strategy=strategy,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
    )
    stats = scanner.stats(data, batch_size=batch_size, progress=progress, source=source)
    info = getattr(data, "info", None)
    described = _describe_data(info) if info is not None else None
    return analyse(
        stats,
        threshold,
        device=scanner.device,
        data=described,
        seconds=time.perf_counter() - started,
    )


def _describe_data(info: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(info) and not isinstance(info, type):
        return asdict(info)
    return dict(vars(info))


def _per_image_norms(tf: Any, recorded: dict[str, Any], tap: _Tap) -> tuple[Any, Any, Any]:
    """ℓ1, ℓ2 and ℓ∞ of each channel's map in each image of one measured tensor: (images, C)."""
    a = recorded[tap.target.measured_after]
    a = tf.cast(a, tf.float32)
    channels = tap.target.channels
    rank = a.shape.rank
    if a.shape[tap.channel_axis] != channels:
        raise RuntimeError(
            f"{tap.target.measured_after}: expected {channels} channels on axis "
            f"{tap.channel_axis}, got shape {a.shape}"
        )
    channel_axis = tap.channel_axis % rank
    spatial = [d for i, d in enumerate(a.shape[1:], start=1) if i != channel_axis]
    if rank > 1 and all(d is not None for d in spatial) and tap.map_size == 0:
        tap.map_size = int(np.prod(spatial)) if spatial else 1
    # Memory traffic is the cost here: the map axes are reduced in place (no reshape or
    # transpose), EuclideanNorm squares inside the reduction (no squared copy is written),
    # and |·| is skipped where the tensor is known to be ≥ 0.
    axes = [i for i in range(1, rank) if i != channel_axis]
    magnitude = a if tap.nonnegative else tf.abs(a)
    if axes:
        l1 = tf.reduce_sum(magnitude, axis=axes)  # (batch, channels)
        l2 = tf.math.reduce_euclidean_norm(a, axis=axes)
        linf = tf.reduce_max(magnitude, axis=axes)
    else:  # Dense: one value per unit and image
        l1 = l2 = linf = magnitude
    return l1, l2, linf


def _batch_sums(tf: Any, l1: Any, l2: Any, linf: Any) -> list[Any]:
    """Σ ℓ1, Σ ℓ2, Σ ℓ∞, Σ ℓ∞² over the images of a batch, and max ℓ∞, per channel."""
    # An empty replica batch (fewer images than devices) must not drag the maximum below 0.
    top = tf.maximum(tf.reduce_max(linf, axis=0), 0.0)
    return [
        tf.reduce_sum(l1, axis=0),
        tf.reduce_sum(l2, axis=0),
        tf.reduce_sum(linf, axis=0),
        tf.reduce_sum(tf.square(linf), axis=0),
        top,
    ]


def _as_tf_batches(
    data: Any, batch_size: int, input_shape: tuple[int | None, ...]
) -> tuple[Any, int | None, list[BaseException], str]:
    """(tf.data.Dataset of float32 x batches, number of images if known, failure box, name)."""
    tf = _tf.tf()
    from kerasaudit.data import Dataset

    failure: list[BaseException] = []
    if isinstance(data, Dataset):

        def inputs() -> Iterator[np.ndarray]:
            # A read error ends the stream here and is raised, as itself, after the loop.
            try:
                for x, _ in data.batches():
                    yield x
            except BadInputError as exc:
                failure.append(exc)

        spec = tf.TensorSpec(shape=(None, *data.info.shape), dtype=tf.float32)
        dataset = tf.data.Dataset.from_generator(inputs, output_signature=spec)
        return dataset.prefetch(2), data.info.count, failure, str(data.info.path)
    if isinstance(data, np.ndarray):
        if batch_size < 1:
            raise BadInputError(f"batch size must be at least 1, got {batch_size}")
        shape = tuple(data.shape[1:])
        if len(shape) != len(input_shape) or any(
            want is not None and want != got for want, got in zip(input_shape, shape, strict=True)
        ):
            raise BadInputError(
                f"data has per-example shape {tuple(data.shape[1:])}, the model expects "
                f"{input_shape}"
            )
        dataset = tf.data.Dataset.from_tensor_slices(data.astype(np.float32, copy=False))
        return dataset.batch(batch_size).prefetch(2), len(data), failure, "array"
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple | list):
            data = data.map(lambda *parts: parts[0])
            spec = spec[0]
        if not isinstance(spec, tf.TensorSpec):
            raise BadInputError(f"expected a tf.data.Dataset of x batches, got {spec}")
        if not spec.shape[1:].is_compatible_with(input_shape):
            raise BadInputError(
                f"data batches have shape {spec.shape}, the model expects (batch, "
                f"{', '.join(str(d) for d in input_shape)})"
            )
        return data.map(lambda x: tf.cast(x, tf.float32)), None, failure, "tf.data"
    raise BadInputError(f"cannot scan data of type {type(data).__name__}")


def _read_ahead(data: Any, failure: list[BaseException]) -> Iterator[np.ndarray]:
    """``data.batches()`` x arrays, read one batch ahead on a helper thread (file reads and
    NumPy conversions release the GIL). A read error ends the stream and lands in ``failure``
    (raised by the caller after the loop, as for the tf.data path)."""
    import queue
    import threading

    ahead: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: np.ndarray | None) -> bool:
        """Hand ``item`` over unless the consumer has stopped; False once it has."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for x, _ in data.batches():
                if not put(x):
                    return
        except BaseException as exc:  # raised as itself on the caller's thread, after the loop
            failure.append(exc)
        put(None)

    thread = threading.Thread(target=reader, name="kerasaudit-read-ahead", daemon=True)
    thread.start()
    try:
        while (x := ahead.get()) is not None:
            yield x
    finally:
        stop.set()
        thread.join()


# --- replaying the model graph with taps -----------------------------------------------------


class _Replay:
    """Run a model on a tensor the way ``model(x, training=False)`` does, recording the outputs
    of the layers named in ``wanted`` (paths as in ``inventory.walk_layers``), including layers
    inside nested Sequential and Functional models, which Keras 3 does not expose as outputs of
    the outer graph. Layers are called on real tensors, so no Keras nodes are added to the model.
    """

    def __init__(self, model: Any, wanted: set[str]) -> None:
        keras = _tf.keras()
        from keras.src.models.functional import Functional

        self._keras = keras
        self._functional = Functional
        self._model = model
        self._wanted = wanted

    def __call__(self, x: Any) -> dict[str, Any]:
        recorded: dict[str, Any] = {}
        self._run_model(self._model, x, "", recorded)
        missing = self._wanted - set(recorded)
        if missing:
            raise BadInputError(
                f"cannot measure {', '.join(sorted(missing))}: not reached when replaying the "
                "model graph"
            )
        return recorded

    def _is_graph_model(self, layer: Any) -> bool:
        if isinstance(layer, self._keras.Sequential):
            return type(layer).call is self._keras.Sequential.call
        return isinstance(layer, self._functional) and type(layer).call is self._functional.call

    def _run_model(self, model: Any, inputs: Any, prefix: str, recorded: dict[str, Any]) -> Any:
        if isinstance(model, self._keras.Sequential):
            x = inputs
            for layer in model.layers:
                x = self._call(layer, f"{prefix}{layer.name}", (x,), {}, recorded)
            return x
        inputs = model._standardize_inputs(inputs)
        outputs = model._run_through_graph(
            inputs,
            operation_fn=lambda op: (
                lambda *args, **kwargs: self._call(op, f"{prefix}{op.name}", args, kwargs, recorded)
            ),
        )
        if isinstance(outputs, list | tuple) and len(outputs) == 1:
            return outputs[0]
        return outputs

    def _call(
        self,
        layer: Any,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recorded: dict[str, Any],
    ) -> Any:
        inside = any(w.startswith(f"{path}/") for w in self._wanted)
        if inside and self._is_graph_model(layer):
            output = self._run_model(layer, args[0], f"{path}/", recorded)
        else:
            if "training" in getattr(layer, "_call_context_args", ()):
                kwargs = {**kwargs, "training": False}
            # Layers a custom layer calls from its own code: their calls are recorded.
            inner = (
                {p: sub for p, sub, _ in descendants(layer, f"{path}/") if p in self._wanted}
                if inside
                else {}
            )
            with tapped(inner, lambda p, _, out: recorded.setdefault(p, out)):
                output = layer(*args, **kwargs)
        if path in self._wanted:
            recorded.setdefault(path, output)  # a shared layer: its first call is measured
        return output


def _find(model: Any, path: str) -> Any:
    for layer_path, layer, _ in walk_layers(model):
        if layer_path == path:
            return layer
    raise BadInputError(f"layer {path} not found in the model")


def _nonnegative(layer: Any) -> bool:
    cls = type(layer).__name__
    if cls == "ReLU":
        slope = getattr(layer, "negative_slope", None)
        threshold = getattr(layer, "threshold", None)
        return slope is not None and float(slope) == 0.0 and float(threshold or 0.0) >= 0.0
    activation = getattr(layer, "activation", None)
    name = str(getattr(activation, "__name__", activation or ""))
    return name in _NONNEGATIVE_ACTIVATIONS
