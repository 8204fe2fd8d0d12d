"""Data loading: the one stage that turns a data file or an image folder into model-ready batches.

Formats: ``.npz`` (streamed straight out of the zip member), ``.npy`` (memory-mapped), HDF5
(read in slices) and image folders (decoded batch by batch). Nothing reads the whole input
array at once, so memory use does not grow with the size of the data set.

The data file is as untrusted as the model: no pickles, bounded ``.npy`` headers, and no
HDF5 external links, virtual datasets or external storage (they would read other files).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
from numpy.lib import format as npy_format

from kerasaudit import _tf
from kerasaudit.errors import BadInputError

Scale = float | None  # None = no scaling
Shape = tuple[int, ...]
ModelShape = tuple[int | None, ...]  # a model's per-example input shape; None = any size

# Default (inputs, labels) array names, tried in this order.
_DEFAULT_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("x", ("y",)),
    ("x_test", ("y_test",)),
    ("x_val", ("y_val",)),
    ("data", ("label", "labels")),
    ("images", ("labels",)),
)
_NUMERIC_KINDS = "biuf"  # bool, signed/unsigned integer, float
_CHANNEL_COUNTS = (1, 3, 4)
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
_IMAGE_FORMATS = ("PNG", "JPEG", "BMP")  # Pillow decoders we allow; anything else is refused
_IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_IMAGE_MODES_CHANNELS = {mode: channels for channels, mode in _IMAGE_MODES.items()}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NPY_SIGNATURE = b"\x93NUMPY"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_MAX_SOFT_LINK_DEPTH = 8
# What corrupt or truncated files raise from zipfile/zlib/numpy/h5py/Pillow. RuntimeError and
# NotImplementedError are zipfile's "encrypted member" and "unsupported compression method".
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    NotImplementedError,
)


@dataclass(frozen=True)
class DataSpec:
    """What the user asked for (the ``--data`` file and its options)."""

    path: Path
    x_key: str | None = None  # .npz / HDF5 array name; default: see _DEFAULT_KEYS
    y_key: str | None = None
    scale: str = "auto"  # "auto" (uint8 → 1/255, else none), "none", "0.00392" or "1/255"
    channels_first: bool | None = None  # None = detect
    limit: int | None = None
    batch_size: int = 128
    resize: bool = False  # resize images to the model's H×W instead of refusing a mismatch


@dataclass(frozen=True)
class DataInfo:
    """A JSON-friendly description of the data as served (no arrays)."""

    path: str
    kind: str  # "npz" | "npy" | "hdf5" | "folder"
    x_key: str | None
    y_key: str | None
    count: int  # examples that will be served (after --limit)
    source_shape: Shape  # per-example shape as stored (folders: the first image)
    shape: Shape  # per-example shape as fed to the model
    source_dtype: str
    scale: float | None
    channels_first: bool  # stored channels-first and transposed to channels-last
    resized: bool
    has_labels: bool
    num_classes_seen: int | None  # distinct label values among the served examples
    class_names: tuple[str, ...] | None = None  # image folders with class sub-folders


class _Reader(Protocol):
    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        """Yield the first ``count`` examples as stored, ``batch_size`` at a time."""
        ...


@dataclass(frozen=True)
class _Layout:
    """How a stored batch becomes a model-ready float32 batch."""

    scale: Scale
    channels_first: bool  # stored (C, H, W): move channels last
    add_channel_axis: bool  # stored (H, W): the model wants (H, W, 1)
    resize_to: tuple[int, int] | None  # (height, width)
    grey_to_colour: bool = False  # one channel stored, the model wants three: repeat it
    unflatten_to: Shape | None = None  # stored flat (H·W·C,): reshape row-major to (H, W, C)

    def apply(self, stored: np.ndarray) -> np.ndarray:
        batch = stored.astype(np.float32)  # always a fresh, writable copy: scale in place
        if self.scale is not None:
            batch *= np.float32(self.scale)
        if self.unflatten_to is not None:
            batch = batch.reshape(len(batch), *self.unflatten_to)
        if self.channels_first:
            batch = batch.transpose(0, 2, 3, 1)
        if self.add_channel_axis:
            batch = batch[..., np.newaxis]
        if self.grey_to_colour:
            batch = np.repeat(batch, 3, axis=-1)
        if self.resize_to is not None:
            batch = _resize_bilinear(batch, self.resize_to)
        return np.ascontiguousarray(batch, dtype=np.float32)


def fold_indices(order: np.ndarray, n_held: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) of a shuffled ``order``: fold k holds out its k-th run of ``n_held``."""
    if fold < 0 or (fold + 1) * n_held > len(order):
        raise BadInputError(f"fold {fold} of {n_held} examples does not fit in {len(order)}")
    start, stop = fold * n_held, (fold + 1) * n_held
    return np.concatenate([order[:start], order[stop:]]), order[start:stop]


class Dataset:
    """Model-ready batches streamed from a data file; re-iterable, constant memory."""

    def __init__(
        self,
        info: DataInfo,
        reader: _Reader,
        layout: _Layout,
        labels: np.ndarray | None,
        *,
        batch_size: int,
    ) -> None:
        self.info = info
        self._reader = reader
        self._layout = layout
        self._labels = labels
        self._batch_size = batch_size

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(x, y) batches: x float32 C-contiguous, y int64 class indices or None."""
        return self._batches(self.info.count)

    def labels(self) -> np.ndarray | None:
        """All served labels (int64), or None when the data has none."""
        return None if self._labels is None else self._labels.copy()

    def take_array(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first ``n`` examples (fewer if the data is shorter) in memory, for small uses."""
        if n < 1:
            raise BadInputError(f"need at least 1 example, asked for {n}")
        parts = list(self._batches(min(n, self.info.count)))
        x = np.concatenate([x for x, _ in parts])
        labels = [y for _, y in parts if y is not None]
        return x, (np.concatenate(labels) if labels else None)

    def as_tf_dataset(self) -> Any:
        """A prefetching ``tf.data.Dataset`` of x batches, or (x, y) batches when labelled.

        Built on :meth:`batches`; a read error in the middle of the data reaches the caller
        wrapped in a TensorFlow error, so callers that need a clean BadInputError iterate
        :meth:`batches` themselves.
        """
        tf = _tf.tf()
        x_spec = tf.TensorSpec(shape=(None, *self.info.shape), dtype=tf.float32)
        if self.info.has_labels:

            def x_and_y() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
                yield from self.batches()

            y_spec = tf.TensorSpec(shape=(None,), dtype=tf.int64)
            dataset = tf.data.Dataset.from_generator(x_and_y, output_signature=(x_spec, y_spec))
        else:

            def x_only() -> Iterator[np.ndarray]:
                for x, _ in self.batches():
                    yield x

            dataset = tf.data.Dataset.from_generator(x_only, output_signature=x_spec)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def split(self, holdout: float, *, seed: int = 0, fold: int = 0) -> tuple[Dataset, Dataset]:
        """(fit, held-out) in-memory parts, shuffled with ``seed``: for choosing settings on
        data a fine-tune did not see. Meant for defender-sized data (it is held in memory).
        ``fold`` k holds out the k-th run of the same shuffle: folds are disjoint."""
        x, y = self.take_array(self.info.count)
        fit_idx, held_idx = self.split_indices(holdout, seed=seed, fold=fold)
        parts = []
        for name, idx in (("fit", fit_idx), ("held-out", held_idx)):
            info = replace(self.info, path=f"{self.info.path} ({name} part)", count=len(idx))
            identity = _Layout(
                scale=None, channels_first=False, add_channel_axis=False, resize_to=None
            )
            labels = None if y is None else y[idx]
            parts.append(
                Dataset(info, _ArrayReader(x[idx]), identity, labels, batch_size=self._batch_size)
            )
        return parts[0], parts[1]

    def split_indices(
        self, holdout: float, *, seed: int = 0, fold: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The example indices of :meth:`split`'s (fit, held-out) parts."""
        if not 0.0 < holdout < 1.0:
            raise BadInputError(f"the held-out share must be between 0 and 1, got {holdout:g}")
        if self.info.count < 2:
            raise BadInputError("need at least 2 examples to hold some out")
        order = np.random.default_rng(seed).permutation(self.info.count)
        n_held = min(self.info.count - 1, max(1, round(self.info.count * holdout)))
        return fold_indices(order, n_held, fold)

    def shard(self, index: int, count: int) -> Dataset:
        """Shard ``index`` of ``count`` (0-based): a contiguous run of examples, the runs of all
        shards covering the data exactly once (sizes differ by at most one). Examples before the
        shard are read and dropped, not held (a streamed file has no random access)."""
        if count < 1 or not 0 <= index < count:
            raise BadInputError(f"shard {index}/{count}: expected 0 ≤ I < N")
        total = self.info.count
        start, stop = total * index // count, total * (index + 1) // count
        if stop <= start:
            raise BadInputError(
                f"shard {index}/{count} of {total:,} examples is empty: use fewer shards"
            )
        info = replace(self.info, path=f"{self.info.path}[{start}:{stop}]", count=stop - start)
        labels = None if self._labels is None else self._labels[start:stop]
        reader = _OffsetReader(self._reader, start)
        return Dataset(info, reader, self._layout, labels, batch_size=self._batch_size)

    def _batches(self, count: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        start = 0
        for stored in self._reader.read(count, self._batch_size):
            x = self._layout.apply(stored)
            stop = start + len(x)
            yield x, (None if self._labels is None else self._labels[start:stop])
            start = stop


@dataclass(frozen=True)
class _OffsetReader:
    """Serves a reader's examples from ``start`` on (see :meth:`Dataset.shard`)."""

    inner: _Reader
    start: int

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        skip = self.start
        pending: list[np.ndarray] = []
        held = 0
        for stored in self.inner.read(self.start + count, batch_size):
            if skip >= len(stored):
                skip -= len(stored)
                continue
            pending.append(stored[skip:])
            held += len(stored) - skip
            skip = 0
            if held >= batch_size:
                joined = np.concatenate(pending)
                yield joined[:batch_size]
                pending, held = [joined[batch_size:]], held - batch_size
        if held:
            yield np.concatenate(pending)


class _ArrayReader:
    """Serves model-ready examples already in memory (see :meth:`Dataset.split`)."""

    def __init__(self, x: np.ndarray) -> None:
        self._x = x

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, count, batch_size):
            yield self._x[start : min(count, start + batch_size)]


@dataclass(frozen=True)
class _Source:
    """An opened input, before it is fitted to the model."""

    kind: str
    where: str  # names the inputs in messages, e.g. "data.npz['x']"
    reader: _Reader
    length: int  # examples stored
    example_shape: Shape  # per example, as the reader yields it
    dtype: np.dtype[Any]
    x_key: str | None = None
    y_key: str | None = None
    stored_labels: np.ndarray | None = None  # as stored: (N,), (N, 1) or one-hot (N, K)
    labels_where: str = "labels"  # names the labels in messages
    stored_shape: Shape | None = None  # when it differs from example_shape (image folders)
    class_names: tuple[str, ...] | None = None
    resized: bool = False  # the reader already resizes (image folders)


def open_data(
    spec: DataSpec, input_shape: Sequence[int | None], num_classes: int | None = None
) -> Dataset:
    """Open ``spec.path`` and check it fits a model with this per-example input shape.

    ``num_classes`` is the model's output size, used to check labels. Raises BadInputError
    (before any batch is served) when the data cannot be used.
    """
    model_shape: ModelShape = tuple(input_shape)
    _check_options(spec)
    scale_rule = _parse_scale(spec.scale)
    source = _open_source(spec, model_shape)
    return _dataset(spec, source, model_shape, scale_rule, num_classes)


def data_from_arrays(
    x: np.ndarray,
    y: np.ndarray | None,
    input_shape: Sequence[int | None],
    num_classes: int | None = None,
    *,
    scale: str = "auto",
    channels_first: bool | None = None,
    batch_size: int = 128,
    resize: bool = False,
    name: str = "<arrays>",
) -> Dataset:
    """A :class:`Dataset` over arrays already in memory (the Python API), checked and laid out
    exactly as a file would be: ``x`` (N, H, W[, C]) or (N, C, H, W), ``y`` class indices
    (N,), (N, 1) or one-hot (N, K), or None. The arrays are not copied."""
    x = np.asarray(x)
    spec = DataSpec(
        Path(name), scale=scale, channels_first=channels_first, batch_size=batch_size,
        resize=resize,
    )  # fmt: skip
    _check_options(spec)
    if x.ndim < 2:
        raise BadInputError(f"{name}: expected an array of examples (N, ...), got shape {x.shape}")
    labels = None if y is None else np.asarray(y)
    if labels is not None and labels.shape[:1] != x.shape[:1]:
        raise BadInputError(
            f"{name}: {x.shape[0]:,} examples but {labels.shape[0] if labels.ndim else 0:,} labels"
        )
    source = _Source(
        kind="array",
        where=name,
        reader=_SlicingReader(lambda: nullcontext(x), name),
        length=int(x.shape[0]),
        example_shape=tuple(int(d) for d in x.shape[1:]),
        dtype=x.dtype,
        stored_labels=labels,
    )
    return _dataset(spec, source, tuple(input_shape), _parse_scale(scale), num_classes)


def _dataset(
    spec: DataSpec,
    source: _Source,
    model_shape: ModelShape,
    scale_rule: float | Literal["auto"] | None,
    num_classes: int | None,
) -> Dataset:
    _check_numeric(source.dtype, source.where)
    if source.length == 0:
        raise BadInputError(f"{source.where} holds no examples")
    count = source.length if spec.limit is None else min(spec.limit, source.length)
    labels = _served_labels(source, count, num_classes)
    layout, shape = _plan_layout(source, model_shape, spec, _resolve_scale(scale_rule, source))
    info = DataInfo(
        path=str(spec.path),
        kind=source.kind,
        x_key=source.x_key,
        y_key=source.y_key,
        count=count,
        source_shape=source.example_shape if source.stored_shape is None else source.stored_shape,
        shape=shape,
        source_dtype=str(source.dtype),
        scale=layout.scale,
        channels_first=layout.channels_first,
        resized=source.resized or layout.resize_to is not None,
        has_labels=labels is not None,
        num_classes_seen=None if labels is None else int(np.unique(labels).size),
        class_names=source.class_names,
    )
    return Dataset(info, source.reader, layout, labels, batch_size=spec.batch_size)


# --- options -------------------------------------------------------------------------------


def _check_options(spec: DataSpec) -> None:
    if spec.batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1, got {spec.batch_size}")
    if spec.limit is not None and spec.limit < 0:
        raise BadInputError(f"--limit must be positive, got {spec.limit}")
    if spec.limit == 0:
        raise BadInputError("--limit 0 leaves no examples to use")


def _parse_scale(text: str) -> float | Literal["auto"] | None:
    """``auto``, ``none``, a number (``0.00392``) or a fraction (``1/255``)."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return "auto" if word == "auto" else None
    numerator, _, denominator = word.partition("/")
    try:
        value = float(numerator) / float(denominator) if denominator else float(numerator)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInputError(
            f"--scale must be 'auto', 'none', a positive number or a fraction like 1/255; "
            f"got {text!r}"
        )
    return value


def _resolve_scale(rule: float | Literal["auto"] | None, source: _Source) -> Scale:
    if rule != "auto":
        return rule
    # Only uint8 is unambiguous pixel data; other dtypes may already be normalised.
    return 1 / 255 if source.dtype == np.uint8 else None


# --- format detection ----------------------------------------------------------------------


def _open_source(spec: DataSpec, model_shape: ModelShape) -> _Source:
    path = spec.path
    if not path.exists():
        raise BadInputError(f"data file {path} does not exist")
    if path.is_dir():
        _refuse_keys(spec, "an image folder")
        if spec.channels_first:
            raise BadInputError("--channels-first does not apply to an image folder")
        return _open_folder(spec, model_shape)
    kind = _detect_file_kind(path)
    if kind == "npy":
        _refuse_keys(spec, "a .npy file")
        return _open_npy(path)
    if kind == "npz":
        return _open_npz(spec)
    return _open_hdf5(spec)


def _refuse_keys(spec: DataSpec, what: str) -> None:
    if spec.x_key is not None or spec.y_key is not None:
        raise BadInputError(f"--x-key/--y-key do not apply to {what} ({spec.path})")


def _detect_file_kind(path: Path) -> str:
    """By signature, not extension: "npy", "npz" or "hdf5"."""
    try:
        with path.open("rb") as file:
            head = file.read(512)
            if head.startswith(_NPY_SIGNATURE):
                return "npy"
            if head.startswith(_ZIP_SIGNATURES):
                return "npz"
            if _has_hdf5_signature(file, path.stat().st_size):
                return "hdf5"
    except OSError as err:
        raise BadInputError(f"cannot read data file {path}: {_one_line(err)}") from err
    raise BadInputError(
        f"{path} is not a .npz, .npy, HDF5 file or image folder (it looks like {_describe(head)})"
    )


def _has_hdf5_signature(file: IO[bytes], size: int) -> bool:
    # HDF5 allows a user block before the superblock: the signature sits at 0, 512, 1024, ...
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= size:
        file.seek(offset)
        if file.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def _describe(head: bytes) -> str:
    """A guess at what a file is, for the 'unknown format' message."""
    signatures = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"BM": "a BMP image",
        b"GIF8": "a GIF image",
        b"\x1f\x8b": "gzip data",
        b"\x80\x04": "a Python pickle",
        b"\x80\x05": "a Python pickle",
        b"\x80\x02": "a Python pickle",
    }
    for signature, what in signatures.items():
        if head.startswith(signature):
            return what
    if not head:
        return "an empty file"
    if all(byte in b"\t\n\r" or 32 <= byte < 127 for byte in head):
        return "text"
    return f"unrecognised binary data starting {head[:8].hex(' ')}"


# --- .npz ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpyHeader:
    shape: Shape
    fortran_order: bool
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _open_npz(spec: DataSpec) -> _Source:
    path = spec.path
    with _reading(str(path)), zipfile.ZipFile(path) as archive:
        members = {
            info.filename.removesuffix(".npy"): info
            for info in archive.infolist()
            if info.filename.endswith(".npy")
        }
        if not members:
            found = ", ".join(archive.namelist()[:10]) or "nothing"
            raise BadInputError(f"{path} is a zip file but holds no .npy arrays (found {found})")
        x_key, y_key = _choose_keys(list(members), lambda key: key in members, spec)
        where = f"{path}[{x_key!r}]"
        header = _npz_member_header(archive, members[x_key], where)
        labels_where = f"{path}[{y_key!r}]"
        stored_labels = None
        if y_key is not None:
            stored_labels = _read_npz_array(archive, members[y_key], labels_where)
        if header.fortran_order and header.dtype.kind in _NUMERIC_KINDS:
            # Fortran-order rows are scattered through the stream, so they cannot be read a
            # batch at a time; np.savez only writes them for F-contiguous arrays (rare).
            whole = _read_npz_array(archive, members[x_key], where)
            reader: _Reader = _SlicingReader(lambda: nullcontext(whole), where)
        else:
            reader = _NpzStreamReader(path, members[x_key].filename, header, where)
    return _Source(
        kind="npz",
        where=where,
        reader=reader,
        length=_length(header.shape, where),
        example_shape=header.shape[1:],
        dtype=header.dtype,
        x_key=x_key,
        y_key=y_key,
        stored_labels=stored_labels,
        labels_where=labels_where,
    )


def _npz_member_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> _NpyHeader:
    with archive.open(member) as stream:
        header = _read_npy_header(stream, where)
        data_offset = stream.tell()
    if header.dtype.kind in _NUMERIC_KINDS and data_offset + header.nbytes > member.file_size:
        raise BadInputError(
            f"{where} is truncated: its header promises {header.nbytes} bytes of data, "
            f"the member holds {member.file_size - data_offset}"
        )
    return header


def _read_npz_array(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> np.ndarray:
    """A whole (small) member, read without pickles."""
    header = _npz_member_header(archive, member, where)
    _check_numeric(header.dtype, where)
    with archive.open(member) as stream:
        _read_npy_header(stream, where)
        data = _read_exact(stream, header.nbytes, where)
    order: Literal["F", "C"] = "F" if header.fortran_order else "C"
    return np.frombuffer(data, dtype=header.dtype).reshape(header.shape, order=order)


@dataclass(frozen=True)
class _NpzStreamReader:
    """Reads C-order rows sequentially from an .npz member (stored or deflated)."""

    path: Path
    member: str
    header: _NpyHeader
    where: str

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        example_shape = self.header.shape[1:]
        example_bytes = math.prod(example_shape) * self.header.dtype.itemsize
        with (
            _reading(self.where),
            zipfile.ZipFile(self.path) as archive,
            archive.open(self.member) as stream,
        ):
            _read_npy_header(stream, self.where)
            for start in range(0, count, batch_size):
                rows = min(batch_size, count - start)
                data = _read_exact(stream, rows * example_bytes, self.where)
                yield np.frombuffer(data, dtype=self.header.dtype).reshape(rows, *example_shape)
            if count == self.header.shape[0]:
                # Step onto the end of the member so zipfile checks its CRC-32: a flipped byte
                # fails loudly instead of feeding the model quietly corrupted examples.
                stream.read(1)


def _read_npy_header(stream: IO[bytes], where: str) -> _NpyHeader:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise BadInputError(f"{where}: .npy format version {version} is not supported")
    except ValueError as err:
        raise BadInputError(f"{where} is not a valid .npy array: {_one_line(err)}") from err
    return _NpyHeader(tuple(shape), bool(fortran_order), np.dtype(dtype))


def _read_exact(stream: IO[bytes], size: int, where: str) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            raise BadInputError(f"{where} is truncated: {size - remaining} of {size} bytes read")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# --- .npy ----------------------------------------------------------------------------------


def _open_npy(path: Path) -> _Source:
    where = str(path)
    with _reading(where), path.open("rb") as file:
        header = _read_npy_header(file, where)

    @contextmanager
    def memory_map() -> Iterator[np.ndarray]:
        yield np.load(path, mmap_mode="r", allow_pickle=False)

    if header.dtype.kind in _NUMERIC_KINDS:
        with _reading(where), memory_map():  # fail now, not mid-run, on a truncated file
            pass
    # C-order rows are read with plain file reads, a batch at a time: a memory map's touched
    # pages count in the process' RSS (+67 MB at 100,000 images, measured), the page cache
    # does not. Fortran-order arrays have no contiguous rows and keep the memory map.
    reader: _Reader = (
        _SlicingReader(memory_map, where)
        if header.fortran_order
        else _NpyStreamReader(path, header, where)
    )
    return _Source(
        kind="npy",
        where=where,
        reader=reader,
        length=_length(header.shape, where),
        example_shape=header.shape[1:],
        dtype=header.dtype,
    )


@dataclass(frozen=True)
class _NpyStreamReader:
    """Reads C-order rows of a .npy file sequentially, ``batch_size`` at a time."""

    path: Path
    header: _NpyHeader
    where: str

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        example_shape = self.header.shape[1:]
        example_bytes = math.prod(example_shape) * self.header.dtype.itemsize
        with _reading(self.where), self.path.open("rb") as stream:
            _read_npy_header(stream, self.where)
            for start in range(0, count, batch_size):
                rows = min(batch_size, count - start)
                data = _read_exact(stream, rows * example_bytes, self.where)
                yield np.frombuffer(data, dtype=self.header.dtype).reshape(rows, *example_shape)


@dataclass(frozen=True)
class _SlicingReader:
    """Reads examples by slicing an array-like: a memory map, an HDF5 dataset, an array."""

    open_array: Callable[[], AbstractContextManager[Any]]
    where: str

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        with _reading(self.where), self.open_array() as array:
            for start in range(0, count, batch_size):
                yield np.asarray(array[start : min(start + batch_size, count)])


# --- HDF5 ----------------------------------------------------------------------------------


def _open_hdf5(spec: DataSpec) -> _Source:
    import h5py  # lazily, like TensorFlow: keeps `kerasaudit --help` fast

    path = spec.path
    with _reading(str(path)), h5py.File(path, "r") as file:
        x_key, y_key = _choose_keys(
            list(file.keys()), lambda key: _h5_has(file, key, f"{path}[{key!r}]"), spec
        )
        where = f"{path}[{x_key!r}]"
        x = _h5_dataset(file, x_key, where)
        labels_where = f"{path}[{y_key!r}]"
        stored_labels = None
        if y_key is not None:
            y = _h5_dataset(file, y_key, labels_where)
            _check_numeric(y.dtype, labels_where)
            stored_labels = np.asarray(y[()])
        shape: Shape = tuple(x.shape) if x.shape is not None else ()
        dtype = np.dtype(x.dtype)

    @contextmanager
    def dataset() -> Iterator[Any]:
        with h5py.File(path, "r") as reopened:
            yield _h5_dataset(reopened, x_key, where)

    return _Source(
        kind="hdf5",
        where=where,
        reader=_SlicingReader(dataset, where),
        length=_length(shape, where),
        example_shape=shape[1:],
        dtype=dtype,
        x_key=x_key,
        y_key=y_key,
        stored_labels=stored_labels,
        labels_where=labels_where,
    )


def _h5_dataset(file: Any, key: str, where: str) -> Any:
    """The dataset at ``key``, refusing anything that would read outside this file."""
    import h5py

    _check_h5_links(file, key, where)
    node = file[key]
    if not isinstance(node, h5py.Dataset):
        raise BadInputError(f"{where} is an HDF5 group, not a dataset")
    if node.is_virtual:
        raise BadInputError(f"{where} is an HDF5 virtual dataset (it reads other files); refused")
    if node.external:
        raise BadInputError(f"{where} keeps its data in external files; refused")
    return node


def _h5_has(file: Any, key: str, where: str) -> bool:
    _check_h5_links(file, key, where)
    return key in file


def _check_h5_links(file: Any, key: str, where: str, depth: int = 0) -> None:
    """Walk ``key`` one link at a time so no external link is ever followed.

    Plain ``file[key]`` or ``key in file`` would open the file an external link names.
    """
    import h5py

    if depth > _MAX_SOFT_LINK_DEPTH:
        raise BadInputError(f"{where}: too many nested HDF5 soft links")
    prefix = ""
    for part in key.strip("/").split("/"):
        parent, prefix = prefix, f"{prefix}/{part}"
        link = file.get(prefix, getlink=True)
        if link is None:
            return  # missing: the caller reports it
        if isinstance(link, h5py.ExternalLink):
            raise BadInputError(
                f"{where} is an HDF5 external link to {link.filename}:{link.path}; refused"
            )
        if isinstance(link, h5py.SoftLink):
            target = link.path if link.path.startswith("/") else f"{parent}/{link.path}"
            _check_h5_links(file, target, where, depth + 1)


# --- shared by .npz and HDF5 ---------------------------------------------------------------


def _choose_keys(
    available: list[str], has: Callable[[str], bool], spec: DataSpec
) -> tuple[str, str | None]:
    """(inputs key, labels key or None): the user's keys, else the first default pair found."""

    def require(key: str, option: str) -> str:
        if not has(key):
            raise BadInputError(
                f"{spec.path} has no array {key!r} ({option}); available: {_listing(available)}"
            )
        return key

    if spec.x_key is not None:
        x_key = require(spec.x_key, "--x-key")
    else:
        defaults = [x for x, _ in _DEFAULT_KEYS if x in available]
        if defaults:
            x_key = defaults[0]
        elif len(available) == 1:
            x_key = available[0]
        else:
            raise BadInputError(
                f"{spec.path}: cannot tell which array holds the inputs "
                f"(found {_listing(available)}); pass --x-key"
            )
    if spec.y_key is not None:
        return x_key, require(spec.y_key, "--y-key")
    paired = dict(_DEFAULT_KEYS).get(x_key, ())
    return x_key, next((y for y in paired if y in available), None)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:20]) or "none"
    return shown + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")


def _length(shape: Shape, where: str) -> int:
    if not shape:
        raise BadInputError(f"{where} is a single value, not an array of examples")
    return shape[0]


def _check_numeric(dtype: np.dtype[Any], where: str) -> None:
    if dtype.kind not in _NUMERIC_KINDS:
        raise BadInputError(f"{where} has dtype {dtype}; kerasaudit needs numbers (ints or floats)")


# --- image folders -------------------------------------------------------------------------


def _open_folder(spec: DataSpec, model_shape: ModelShape) -> _Source:
    folder = spec.path
    mode, channel_axis = _image_mode(model_shape)
    files, labels, class_names = _find_images(folder)
    if not files:
        raise BadInputError(f"{folder} holds no PNG, JPEG or BMP images")
    first_height, first_width, first_bands = _image_header(files[0])
    height = model_shape[0] if model_shape[0] is not None else first_height
    width = model_shape[1] if model_shape[1] is not None else first_width
    stored_shape = (first_height, first_width, first_bands)
    needs_resize = (first_height, first_width) != (height, width)
    if needs_resize and not spec.resize:
        raise BadInputError(_mismatch_message(stored_shape, model_shape, resizable=True))
    channels = _IMAGE_MODES_CHANNELS[mode]
    example_shape = (height, width, channels) if channel_axis else (height, width)
    return _Source(
        kind="folder",
        where=str(folder),
        reader=_ImageReader(tuple(files), mode, (height, width), spec.resize, channel_axis),
        length=len(files),
        example_shape=example_shape,
        dtype=np.dtype(np.uint8),
        stored_labels=labels,
        labels_where=f"{folder} class sub-folders",
        stored_shape=stored_shape,
        class_names=class_names,
        resized=needs_resize,
    )


def _image_mode(model_shape: ModelShape) -> tuple[str, bool]:
    """(Pillow mode, add a channel axis) for the model's input."""
    if len(model_shape) == 2:
        return "L", False
    if len(model_shape) == 3 and model_shape[2] is None:
        return "RGB", True
    if len(model_shape) == 3 and model_shape[2] in _IMAGE_MODES:
        return _IMAGE_MODES[model_shape[2]], True
    raise BadInputError(
        f"an image folder cannot feed the model input {_format_shape(model_shape)}; "
        f"it needs (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    )


def _find_images(folder: Path) -> tuple[list[Path], np.ndarray | None, tuple[str, ...] | None]:
    """Class sub-folders (sorted names → labels 0..K-1) or a flat folder (no labels)."""
    entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    class_dirs = [entry for entry in entries if entry.is_dir()]
    flat_images = [entry for entry in entries if _is_image_file(entry)]
    if not class_dirs:
        return flat_images, None, None
    if flat_images:
        raise BadInputError(
            f"{folder} mixes images and sub-folders; use one sub-folder per class "
            f"or a flat folder of images"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(
            image
            for image in class_dir.rglob("*")
            if _is_image_file(image)
            and not any(part.startswith(".") for part in image.relative_to(class_dir).parts)
        )
        files.extend(found)
        labels.extend([label] * len(found))
    return files, np.array(labels, dtype=np.int64), tuple(d.name for d in class_dirs)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()


def _image_header(path: Path) -> tuple[int, int, int]:
    """(height, width, bands) without decoding the pixels."""
    from PIL import Image

    with _reading_image(path), Image.open(path, formats=_IMAGE_FORMATS) as image:
        return image.height, image.width, len(image.getbands())


@dataclass(frozen=True)
class _ImageReader:
    """Decodes a batch of image files at a time into uint8 (N, H, W[, C])."""

    files: tuple[Path, ...]
    mode: str  # Pillow mode matching the model's channels: L, RGB or RGBA
    size: tuple[int, int]  # (height, width) the model gets
    resize: bool
    channel_axis: bool

    def read(self, count: int, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, count, batch_size):
            batch = self.files[start : min(start + batch_size, count)]
            yield np.stack([self._load(path) for path in batch])

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image

        with _reading_image(path), Image.open(path, formats=_IMAGE_FORMATS) as opened:
            # Palette transparency only survives conversion by way of RGBA.
            image = opened.convert("RGBA") if opened.mode == "P" else opened
            image = image.convert(self.mode)
        height, width = self.size
        if image.size != (width, height):
            if not self.resize:
                raise BadInputError(
                    f"image {path} is {image.width}×{image.height} pixels, the model input is "
                    f"{width}×{height}; pass --resize to resize"
                )
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels[..., np.newaxis] if self.channel_axis and pixels.ndim == 2 else pixels


@contextmanager
def _reading_image(path: Path) -> Iterator[None]:
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise BadInputError(f"cannot read image {path}: {_one_line(err)}") from err


# --- labels --------------------------------------------------------------------------------


def _served_labels(source: _Source, count: int, num_classes: int | None) -> np.ndarray | None:
    """Class indices (int64) for the first ``count`` examples, checked against the model."""
    stored = source.stored_labels
    if stored is None:
        return None
    where = source.labels_where
    if stored.ndim == 0 or len(stored) != source.length:
        stored_length = "a single value" if stored.ndim == 0 else f"{len(stored)} entries"
        raise BadInputError(f"{where} has {stored_length} but there are {source.length} examples")
    indices = _class_indices(stored[:count], where, num_classes)
    _check_label_range(indices, where, num_classes)
    return indices.astype(np.int64)


def _class_indices(labels: np.ndarray, where: str, num_classes: int | None) -> np.ndarray:
    _check_numeric(labels.dtype, where)
    if labels.ndim == 2 and labels.shape[1] == 1:
        return _whole_numbers(labels[:, 0], where)  # e.g. CIFAR's (N, 1) labels
    if labels.ndim == 2:
        columns = labels.shape[1]
        if num_classes is not None and columns != num_classes:
            raise BadInputError(
                f"{where} are one-hot with {columns} columns but the model has "
                f"{num_classes} outputs"
            )
        return labels.argmax(axis=1)
    if labels.ndim != 1:
        raise BadInputError(
            f"{where} must be class indices (N,) or one-hot (N, K); got shape {labels.shape}"
        )
    return _whole_numbers(labels, where)


def _whole_numbers(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.dtype.kind != "f":
        return labels
    bad = ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        index = int(np.argmax(bad))
        raise BadInputError(
            f"{where} must be whole class numbers; found {labels[index]} at index {index}"
        )
    return labels


def _check_label_range(indices: np.ndarray, where: str, num_classes: int | None) -> None:
    # A single sigmoid output still separates two classes, 0 and 1.
    upper = None if num_classes is None else max(num_classes, 2)
    bad = indices < 0 if upper is None else (indices < 0) | (indices >= upper)
    if not bad.any():
        return
    index = int(np.argmax(bad))
    value = indices[index].item()
    value_text = str(int(value)) if float(value).is_integer() else str(value)
    allowed = "must not be negative" if upper is None else f"is outside [0, {upper})"
    model = "" if num_classes is None else f" for a model with {num_classes} outputs"
    raise BadInputError(f"{where}: label {value_text} at index {index} {allowed}{model}")


# --- fitting examples to the model input ---------------------------------------------------


def _plan_layout(
    source: _Source, model_shape: ModelShape, spec: DataSpec, scale: Scale
) -> tuple[_Layout, Shape]:
    """How each stored example becomes the model's input, and the resulting shape."""
    stored = source.example_shape
    unflatten_to = _unflattened(stored, model_shape)
    if unflatten_to is not None:
        return _Layout(scale, False, False, None, unflatten_to=unflatten_to), unflatten_to
    channels_first = _use_channels_first(stored, model_shape, spec)
    shape = (*stored[1:], stored[0]) if channels_first else stored
    add_channel_axis = len(shape) + 1 == len(model_shape) and model_shape[-1] in (1, 3)
    if add_channel_axis:
        shape = (*shape, 1)
    # A grey image is the colour image with three equal channels (as an image folder's
    # greyscale files are read for a colour model).
    grey_to_colour = len(shape) == 3 == len(model_shape) and shape[2] == 1 and model_shape[2] == 3
    if grey_to_colour:
        shape = (*shape[:2], 3)
    resize_to = None
    if not _fits(shape, model_shape):
        if not (spec.resize and _resizable(shape, model_shape)):
            resizable = _resizable(shape, model_shape)
            raise BadInputError(_mismatch_message(stored, model_shape, resizable))
        resize_to = (
            model_shape[0] if model_shape[0] is not None else shape[0],
            model_shape[1] if model_shape[1] is not None else shape[1],
        )
        shape = (*resize_to, *shape[2:])
    return _Layout(scale, channels_first, add_channel_axis, resize_to, grey_to_colour), shape


def _unflattened(stored: Shape, model_shape: ModelShape) -> Shape | None:
    """The image shape of flat examples ``(H·W·C,)`` for a model that takes ``(H, W, C)``
    images (read row-major, as ``x.reshape(len(x), -1)`` wrote them), else None."""
    if len(stored) != 1 or len(model_shape) != 3 or None in model_shape:
        return None
    image = tuple(int(d) for d in model_shape if d is not None)
    return image if int(np.prod(image)) == stored[0] else None


def _use_channels_first(stored: Shape, model_shape: ModelShape, spec: DataSpec) -> bool:
    """Whether examples are stored (C, H, W) for a model that wants (H, W, C)."""
    if spec.channels_first is not None:
        if spec.channels_first and len(stored) != 3:
            raise BadInputError(
                f"--channels-first needs examples shaped (C, H, W); they are {stored}"
            )
        return spec.channels_first
    if len(stored) != 3 or stored[0] not in _CHANNEL_COUNTS:
        return False
    moved = (*stored[1:], stored[0])

    def usable(shape: Shape) -> bool:
        return _fits(shape, model_shape) or (spec.resize and _resizable(shape, model_shape))

    return not usable(stored) and usable(moved)


def _fits(shape: Shape, model_shape: ModelShape) -> bool:
    return len(shape) == len(model_shape) and all(
        want is None or want == got for got, want in zip(shape, model_shape, strict=True)
    )


def _resizable(shape: Shape, model_shape: ModelShape) -> bool:
    """Images (H, W) or (H, W, C) that differ from the model input only in height and width."""
    if len(shape) != len(model_shape) or len(shape) not in (2, 3):
        return False
    return len(shape) == 2 or model_shape[2] in (None, shape[2])


def _mismatch_message(stored: Shape, model_shape: ModelShape, resizable: bool) -> str:
    hint = "; pass --resize to resize" if resizable else ""
    return (
        f"data shape {_format_shape(stored)} does not fit the model input "
        f"{_format_shape(model_shape)}{hint}"
    )


def _format_shape(shape: Sequence[int | None]) -> str:
    return str(tuple(shape))


def _resize_bilinear(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a batch (N, H, W[, C]) to ``size`` = (height, width), like Keras's Resizing."""
    tf = _tf.tf()
    images = batch if batch.ndim == 4 else batch[..., np.newaxis]
    resized = tf.image.resize(images, size, method="bilinear").numpy()
    return resized if batch.ndim == 4 else resized[..., 0]


# --- errors --------------------------------------------------------------------------------


@contextmanager
def _reading(where: str) -> Iterator[None]:
    """Turn the many ways a corrupt or truncated file fails into one BadInputError."""
    try:
        yield
    except _READ_ERRORS as err:
        raise BadInputError(
            f"cannot read {where}: corrupt or truncated ({_one_line(err)})"
        ) from err


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
