"""Static safety checks of a model file, done before Keras (or TensorFlow) ever sees it.

A model file is untrusted input. Keras' own ``safe_mode`` only blocks Lambda bytecode; a config
can still name arbitrary Keras-exported functions, a huge layer can exhaust memory while it is
being built, HDF5 files can link to other files on disk, and tf-keras has no safe mode for
``.h5`` at all. So this module reads the config with ``zipfile``/``h5py``/``json`` only, walks
the whole tree (nested models and wrappers included) and refuses anything outside an allowlist.

Nothing here imports TensorFlow except the SavedModel graph check, which parses protobufs only.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kerasaudit._allowlist import ALLOWED_CLASSES, ALLOWED_FUNCTIONS, DENIED_CLASSES
from kerasaudit.errors import BadInputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

MAX_CONFIG_BYTES = 32 * 1024 * 1024  # a ResNet152 config is ~1 MB
MAX_CONFIG_DEPTH = 200  # JSON nesting; each nested model adds ~8 levels
MAX_CONFIG_NODES = 2_000_000
MAX_INT_IN_CONFIG = 2**31 - 1
# A declared weight count this many times larger than what the file stores is refused: real
# files store every weight they declare (the lower bound below never over-counts).
PARAM_SLACK_FACTOR = 4
PARAM_SLACK_ABSOLUTE = 1_000_000
# HDF5 datasets whose declared size dwarfs the bytes on disk (fill-value / compression bombs).
DATASET_INFLATION_LIMIT = 100
DATASET_INFLATION_FLOOR = 64 * 1024 * 1024

ALLOWED_MODULES = frozenset(
    {
        "keras",
        "keras.layers",
        "keras.models",
        "keras.initializers",
        "keras.regularizers",
        "keras.constraints",
        "keras.losses",
        "keras.metrics",
        "keras.optimizers",
        "keras.optimizers.schedules",
        "keras.dtype_policies",
        "keras.src.models.functional",
        "keras.src.models.sequential",
        "keras.src.models.model",
    }
)
ALLOWED_FUNCTION_MODULES = frozenset(
    {None, "builtins", "keras.activations", "keras.losses", "keras.metrics"}
)
ALLOWED_TYPE_SPECS = frozenset({"tf.TensorSpec", "tf.RaggedTensorSpec", "tf.SparseTensorSpec"})
# Keys under which a nested layer config sits (so that messages can name the layer's path).
LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})
PATH_KEYS = frozenset({"vocabulary", "filepath", "file_path", "path", "idf_weights", "filename"})
_PATH_RE = re.compile(
    r"^(/|~|\.{1,2}/|[A-Za-z]:[\\/]|\\\\|file:)|://|\.(txt|csv|tsv|json|pb|h5|hdf5|keras|py|pyc|so|"
    r"dll|pkl|pickle|npy|npz|tfrecord|vocab|model|bin|sh)$",
    re.IGNORECASE,
)


class ModelFormat(StrEnum):
    KERAS = "keras"  # Keras 3 zip archive
    H5 = "h5"  # legacy HDF5 full model (Keras 2.x or 3)
    SAVEDMODEL = "savedmodel"  # TF SavedModel directory written by tf.keras


@dataclass(frozen=True)
class Finding:
    """One reason to refuse a model. ``where`` is a layer path ('features/conv2') or a file part."""

    where: str
    category: (
        str  # code | module | unknown-class | custom | path | resources | hdf5 | graph-op | format
    )
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "category": self.category, "reason": self.reason}


@dataclass(frozen=True)
class SafetyReport:
    path: str
    format: ModelFormat
    keras_version: str | None
    backend: str | None
    findings: tuple[Finding, ...]
    declared_params_lower_bound: int
    stored_params: int | None

    @property
    def safe(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": str(self.format),
            "keras_version": self.keras_version,
            "backend": self.backend,
            "safe": self.safe,
            "findings": [f.to_dict() for f in self.findings],
            "declared_params_lower_bound": self.declared_params_lower_bound,
            "stored_params": self.stored_params,
        }


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------


def detect_format(path: Path) -> ModelFormat:
    """Identify a model by its bytes, not its extension. Local paths only."""
    text = str(path)
    if "://" in text or text.startswith(("gs:", "s3:", "hf:")):
        raise BadInputError(f"{text}: only local model paths are accepted")
    if not path.exists():
        raise BadInputError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return ModelFormat.SAVEDMODEL
        if (path / "config.json").is_file():
            raise BadInputError(
                f"{path}: an unzipped .keras directory; zip it back into a .keras file"
            )
        raise BadInputError(
            f"{path}: a directory that is not a model (no saved_model.pb); "
            "expected a .keras file, an .h5 file or a SavedModel directory"
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(ZIP_SIGNATURE):
        return ModelFormat.KERAS
    if head == HDF5_SIGNATURE or _hdf5_with_userblock(path):
        return ModelFormat.H5
    raise BadInputError(
        f"{path}: not a model file (neither a .keras zip archive nor HDF5; "
        f"first bytes {head[:8]!r})"
    )


def _hdf5_with_userblock(path: Path) -> bool:
    # HDF5 allows a user block: the signature may sit at 512, 1024, 2048, ... bytes.
    size = path.stat().st_size
    with path.open("rb") as fh:
        offset = 512
        while offset + 8 <= size and offset <= 1 << 20:
            fh.seek(offset)
            if fh.read(8) == HDF5_SIGNATURE:
                return True
            offset *= 2
    return False


# --------------------------------------------------------------------------------------------
# Config walking (shared by every format)
# --------------------------------------------------------------------------------------------


@dataclass
class _Walk:
    custom: frozenset[str]
    findings: list[Finding] = field(default_factory=list)
    params_lower_bound: int = 0
    nodes: int = 0

    def add(self, where: str, category: str, reason: str) -> None:
        # One finding per (where, reason) keeps messages short on repetitive configs.
        finding = Finding(where or "<model>", category, reason)
        if finding not in self.findings:
            self.findings.append(finding)


def parse_config_json(raw: bytes | str, where: str) -> Any:
    """Parse JSON with caps on size and nesting depth (checked before the parser recurses)."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_CONFIG_BYTES:
            raise _Refused(
                where, "resources", f"config is {len(raw)} bytes (cap {MAX_CONFIG_BYTES})"
            )
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Refused(where, "format", f"config is not UTF-8 ({exc.reason})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise _Refused(where, "resources", f"config is {len(raw)} bytes (cap {MAX_CONFIG_BYTES})")
    depth = _max_bracket_depth(raw)
    if depth > MAX_CONFIG_DEPTH:
        raise _Refused(
            where, "resources", f"config nests {depth} levels deep (cap {MAX_CONFIG_DEPTH})"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Refused(where, "format", f"config is not valid JSON ({exc})") from exc


def _max_bracket_depth(text: str) -> int:
    """Nesting depth of JSON text, ignoring brackets inside strings. Linear, no recursion."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


class _Refused(Exception):
    def __init__(self, where: str, category: str, reason: str) -> None:
        super().__init__(reason)
        self.finding = Finding(where, category, reason)


def check_config(
    config: Any, custom: Iterable[str] = (), where: str = ""
) -> tuple[list[Finding], int]:
    """Walk a (Keras 2 or 3) model config; return findings and a lower bound on its weights."""
    walk = _Walk(custom=frozenset(custom))
    _walk_config(walk, config, where)
    return walk.findings, walk.params_lower_bound


def _walk_config(walk: _Walk, root: Any, root_path: str) -> None:
    # Iterative (explicit stack), so hostile nesting cannot hit Python's recursion limit.
    stack: list[tuple[Any, str, str]] = [(root, root_path, "")]
    while stack:
        obj, layer_path, key = stack.pop()
        walk.nodes += 1
        if walk.nodes > MAX_CONFIG_NODES:
            walk.add(layer_path, "resources", f"config has more than {MAX_CONFIG_NODES} nodes")
            return
        if isinstance(obj, dict):
            if "class_name" in obj:
                layer_path = _check_object(walk, obj, layer_path, key)
            for child_key, value in obj.items():
                if not isinstance(child_key, str):
                    continue
                if isinstance(value, str):
                    _check_string(walk, child_key, value, layer_path)
                elif isinstance(value, int) and not isinstance(value, bool):
                    _check_int(walk, child_key, value, layer_path)
                elif isinstance(value, dict | list):
                    stack.append((value, layer_path, child_key))
        elif isinstance(obj, list):
            for item in obj:
                if isinstance(item, str):
                    _check_string(walk, key, item, layer_path)
                elif isinstance(item, int) and not isinstance(item, bool):
                    _check_int(walk, key, item, layer_path)
                elif isinstance(item, dict | list):
                    stack.append((item, layer_path, key))


def _check_object(walk: _Walk, obj: dict[str, Any], layer_path: str, key: str) -> str:
    """Check one serialized object; return the layer path its children live under."""
    cls = obj.get("class_name")
    config = obj.get("config")
    module = obj.get("module")
    registered = obj.get("registered_name")
    name = config.get("name") if isinstance(config, dict) else None
    if not isinstance(name, str):
        name = obj.get("name") if isinstance(obj.get("name"), str) else None
    here = layer_path
    if key in LAYER_KEYS and name:
        here = f"{layer_path}/{name}" if layer_path else name
    is_layer = (here and here != layer_path) or key in LAYER_KEYS
    label = f"layer '{here}'" if is_layer else (here or "model")
    if not isinstance(cls, str):
        walk.add(here, "format", f"{label}: class_name is not a string")
        return here
    if cls in walk.custom or (isinstance(registered, str) and registered in walk.custom):
        return here
    if cls == "TypeSpec" and obj.get("type_spec") in ALLOWED_TYPE_SPECS:
        return here  # tf-keras SavedModel metadata describes input specs this way
    if cls.startswith("Custom>") and cls.removeprefix("Custom>") in ALLOWED_CLASSES:
        # tf.keras (Keras 2.11+) saves its own optimizers as "Custom>Adam" in training_config.
        cls = cls.removeprefix("Custom>")
    if cls in DENIED_CLASSES or cls == "__lambda__":
        walk.add(here, "code", f"{label} is a {cls} layer, which runs code stored in the file")
        return here
    if "function" in (config or {}) and isinstance(config, dict) and config.get("function_type"):
        walk.add(here, "code", f"{label} ({cls}) carries a serialized Python function")
    if cls == "function":
        fn = config if isinstance(config, str) else None
        if fn is None or fn not in ALLOWED_FUNCTIONS or module not in ALLOWED_FUNCTION_MODULES:
            walk.add(
                here,
                "module",
                f"{label} refers to function {module or ''}{'.' if module else ''}{fn!r}, "
                "which is not a Keras activation, loss or metric",
            )
        elif registered not in (None, "function", fn):
            walk.add(here, "custom", f"{label} names a registered custom function {registered!r}")
        return here
    if cls not in ALLOWED_CLASSES:
        walk.add(
            here,
            "unknown-class",
            f"{label} has class {cls!r}, which is not a built-in Keras layer or object "
            "(name it in --custom-objects if you trust it)",
        )
        return here
    if module is not None and module not in ALLOWED_MODULES:
        walk.add(here, "module", f"{label} ({cls}) names module {module!r}, outside Keras")
    if registered not in (None, cls) and not (cls == "Functional" and registered == "Functional"):
        walk.add(here, "custom", f"{label} ({cls}) is registered as custom object {registered!r}")
    if isinstance(config, dict):
        walk.params_lower_bound += _declared_params_lower_bound(cls, config, obj)
    return here


def _check_string(walk: _Walk, key: str, value: str, layer_path: str) -> None:
    if key in ("name", "class_name", "module", "registered_name"):
        return
    if (key in PATH_KEYS and value) or _PATH_RE.search(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        where = f"layer '{layer_path}'" if layer_path else "model"
        walk.add(layer_path, "path", f"{where}: '{key}' holds a path-like string {shown!r}")


def _check_int(walk: _Walk, key: str, value: int, layer_path: str) -> None:
    if key in ("shared_object_id", "seed", "node_index", "tensor_index"):
        return
    if abs(value) > MAX_INT_IN_CONFIG:
        where = f"layer '{layer_path}'" if layer_path else "model"
        walk.add(layer_path, "resources", f"{where}: '{key}' = {value} is implausibly large")


def _ints(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _input_channels(obj: dict[str, Any]) -> int:
    build = obj.get("build_config")
    if isinstance(build, dict):
        shape = build.get("input_shape")
        if isinstance(shape, list) and shape and isinstance(shape[-1], int):
            return max(1, shape[-1])
    return 1


def _declared_params_lower_bound(cls: str, config: dict[str, Any], obj: dict[str, Any]) -> int:
    """A lower bound on the weights a layer will allocate when built (never over-counts)."""

    def prod(values: list[int]) -> int:
        return math.prod(max(1, v) for v in values) if values else 1

    kernel = prod(_ints(config.get("kernel_size")))
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return (
            max(
                1,
                _ints(config.get("depth_multiplier"))[0]
                if _ints(config.get("depth_multiplier"))
                else 1,
            )
            * kernel
        )
    if cls.startswith("SeparableConv"):
        filters = (_ints(config.get("filters")) or [1])[0]
        return max(0, filters) + kernel
    if "filters" in config and _ints(config.get("filters")):
        groups = (_ints(config.get("groups")) or [1])[0] or 1
        channels = (
            _input_channels(obj) // groups
            if cls.startswith("Conv") and "Transpose" not in cls
            else 1
        )
        return max(0, _ints(config["filters"])[0]) * kernel * max(1, channels)
    if cls == "Embedding":
        return prod(_ints(config.get("input_dim"))) * prod(_ints(config.get("output_dim")))
    if cls in ("LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell"):
        units = (_ints(config.get("units")) or [0])[0]
        return max(0, units) ** 2
    if "units" in config and _ints(config.get("units")):
        return max(0, _ints(config["units"])[0]) * _input_channels(obj)
    if cls == "MultiHeadAttention":
        return prod(_ints(config.get("num_heads"))) * prod(_ints(config.get("key_dim")))
    return 0


# --------------------------------------------------------------------------------------------
# HDF5 structure (links, virtual/external datasets, bombs), shared by .h5 and the .keras weights
# --------------------------------------------------------------------------------------------


def _check_hdf5_tree(h5file: Any, where: str, findings: list[Finding]) -> int:
    """Walk every group by hard links only. Returns the number of stored weight elements."""
    import h5py

    stored = 0
    declared_bytes = 0
    disk_bytes = 0
    stack: list[tuple[Any, str]] = [(h5file, "")]
    seen: set[Any] = set()
    while stack:
        group, prefix = stack.pop()
        for key in group:
            link = group.get(key, getlink=True)
            name = f"{prefix}/{key}"
            if isinstance(link, h5py.ExternalLink):
                findings.append(
                    Finding(f"{where}:{name}", "hdf5", f"external link to {link.filename!r}")
                )
                continue
            if isinstance(link, h5py.SoftLink):
                findings.append(Finding(f"{where}:{name}", "hdf5", f"soft link to {link.path!r}"))
                continue
            obj = group.get(key)
            if obj is None:
                continue
            addr = obj.id.__hash__()
            if addr in seen:
                continue
            seen.add(addr)
            if isinstance(obj, h5py.Group):
                stack.append((obj, name))
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    findings.append(Finding(f"{where}:{name}", "hdf5", "virtual dataset"))
                    continue
                if obj.external:
                    findings.append(
                        Finding(f"{where}:{name}", "hdf5", "dataset stored in an external file")
                    )
                    continue
                size = int(obj.size or 0)
                declared_bytes += size * obj.dtype.itemsize
                disk_bytes += int(obj.id.get_storage_size())
                if obj.dtype.kind in "fiuc" and "optimizer" not in name:
                    stored += size
    if declared_bytes > DATASET_INFLATION_FLOOR + DATASET_INFLATION_LIMIT * disk_bytes:
        findings.append(
            Finding(
                where,
                "resources",
                f"datasets declare {declared_bytes} bytes but store only {disk_bytes}",
            )
        )
    return stored


def _read_attr_capped(h5file: Any, name: str, where: str) -> Any:
    if name not in h5file.attrs:
        return None
    size = h5file.attrs.get_id(name).get_storage_size()
    if size > MAX_CONFIG_BYTES:
        raise _Refused(
            where, "resources", f"attribute {name} is {size} bytes (cap {MAX_CONFIG_BYTES})"
        )
    value = h5file.attrs[name]
    if hasattr(value, "decode"):
        value = value.decode("utf-8", errors="replace")
    return value


# --------------------------------------------------------------------------------------------
# Per-format checks
# --------------------------------------------------------------------------------------------


def check_model_file(path: Path, custom: Iterable[str] = ()) -> SafetyReport:
    """Check a model without executing anything in it. Raises BadInputError for non-models."""
    fmt = detect_format(path)
    custom_names = frozenset(custom)
    try:
        if fmt is ModelFormat.KERAS:
            return _check_keras_zip(path, custom_names)
        if fmt is ModelFormat.H5:
            return _check_h5(path, custom_names)
        return _check_savedmodel(path, custom_names)
    except _Refused as refused:
        return SafetyReport(str(path), fmt, None, None, (refused.finding,), 0, None)


def _params_finding(declared: int, stored: int | None) -> list[Finding]:
    if stored is None:
        return []
    if declared > PARAM_SLACK_FACTOR * stored + PARAM_SLACK_ABSOLUTE:
        return [
            Finding(
                "<model>",
                "resources",
                f"the config declares at least {declared:,} weights but the file stores "
                f"{stored:,}; building it would allocate memory the file never fills",
            )
        ]
    return []


def _check_keras_zip(path: Path, custom: frozenset[str]) -> SafetyReport:
    where = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInputError(f"{path}: corrupt .keras archive ({exc})") from exc
    findings: list[Finding] = []
    with archive:
        names = archive.namelist()
        if "config.json" not in names:
            raise BadInputError(f"{path}: .keras archive without config.json (not a Keras model)")
        for info in archive.infolist():
            if info.file_size > DATASET_INFLATION_FLOOR and info.file_size > (
                DATASET_INFLATION_LIMIT * max(1, info.compress_size)
            ):
                findings.append(
                    Finding(
                        f"{where}:{info.filename}",
                        "resources",
                        f"compressed {info.compress_size} bytes inflate to {info.file_size}",
                    )
                )
        try:
            raw = _read_member_capped(archive, "config.json", MAX_CONFIG_BYTES)
            meta_raw = (
                _read_member_capped(archive, "metadata.json", 1 << 20)
                if "metadata.json" in names
                else b"{}"
            )
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BadInputError(f"{path}: corrupt .keras archive ({exc})") from exc
        config = parse_config_json(raw, f"{where}:config.json")
        try:
            metadata = json.loads(meta_raw.decode("utf-8", errors="replace"))
        except ValueError:
            metadata = {}
        walk_findings, declared = check_config(config, custom)
        findings.extend(walk_findings)
        stored: int | None = None
        if "model.weights.h5" in names and not any(f.category == "resources" for f in findings):
            stored = _check_zipped_weights(archive, where, findings)
    if stored is not None:
        findings.extend(_params_finding(declared, stored))
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return SafetyReport(
        str(path),
        ModelFormat.KERAS,
        str(version) if version else None,
        "tensorflow" if version else None,
        tuple(findings),
        declared,
        stored,
    )


def _read_member_capped(archive: zipfile.ZipFile, name: str, cap: int) -> bytes:
    with archive.open(name) as member:
        data = member.read(cap + 1)
    if len(data) > cap:
        raise _Refused(f"{name}", "resources", f"{name} is larger than {cap} bytes")
    return data


def _check_zipped_weights(archive: zipfile.ZipFile, where: str, findings: list[Finding]) -> int:
    import tempfile

    import h5py

    with tempfile.TemporaryFile() as tmp:
        with archive.open("model.weights.h5") as member:
            while chunk := member.read(1 << 20):
                tmp.write(chunk)
        tmp.seek(0)
        try:
            with h5py.File(tmp, "r") as weights:
                return _check_hdf5_tree(weights, f"{where}:model.weights.h5", findings)
        except OSError as exc:
            raise BadInputError(
                f"{where}: corrupt model.weights.h5 inside the archive ({exc})"
            ) from exc


def _check_h5(path: Path, custom: frozenset[str]) -> SafetyReport:
    import h5py

    where = path.name
    try:
        h5file = h5py.File(path, "r")
    except OSError as exc:
        raise BadInputError(f"{path}: corrupt or truncated HDF5 file ({exc})") from exc
    findings: list[Finding] = []
    with h5file:
        try:
            model_config = _read_attr_capped(h5file, "model_config", f"{where}:model_config")
            training_config = _read_attr_capped(
                h5file, "training_config", f"{where}:training_config"
            )
            keras_version = _read_attr_capped(h5file, "keras_version", where)
            backend = _read_attr_capped(h5file, "backend", where)
        except OSError as exc:
            raise BadInputError(f"{path}: corrupt or truncated HDF5 file ({exc})") from exc
        if model_config is None:
            raise BadInputError(
                f"{path}: HDF5 file without a model config (a weights-only file or not a "
                "Keras model)"
            )
        config = parse_config_json(str(model_config), f"{where}:model_config")
        walk_findings, declared = check_config(config, custom)
        findings.extend(walk_findings)
        if training_config is not None:
            tc = parse_config_json(str(training_config), f"{where}:training_config")
            tc_findings, _ = check_config(tc, custom, where="training_config")
            findings.extend(tc_findings)
        try:
            stored = _check_hdf5_tree(h5file, where, findings)
        except OSError as exc:
            raise BadInputError(f"{path}: corrupt or truncated HDF5 file ({exc})") from exc
    findings.extend(_params_finding(declared, stored))
    return SafetyReport(
        str(path),
        ModelFormat.H5,
        str(keras_version) if keras_version else None,
        str(backend) if backend else None,
        tuple(findings),
        declared,
        stored,
    )


# ---- SavedModel ---------------------------------------------------------------------------

# Ops that touch files, processes, the network or Python. They may appear only inside the
# checkpoint save/restore functions that every SavedModel carries (see _check_graph_ops).
CHECKPOINT_OPS = frozenset(
    {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec"}
)
_SAVER_FUNCTION_RE = re.compile(r"^__inference__traced_(save|restore)_\d+$")


def _check_savedmodel(path: Path, custom: frozenset[str]) -> SafetyReport:
    from kerasaudit._graph_ops import ALLOWED_GRAPH_OPS

    findings: list[Finding] = []
    for item in path.rglob("*"):
        if item.is_symlink():
            findings.append(
                Finding(str(item.relative_to(path)), "path", "symbolic link inside the SavedModel")
            )
    pb = path / "saved_model.pb"
    if pb.stat().st_size > 1 << 31:
        raise _Refused("saved_model.pb", "resources", "saved_model.pb is larger than 2 GiB")
    saved_model = _parse_proto(pb, "saved_model")
    findings.extend(_check_graph_ops(saved_model, ALLOWED_GRAPH_OPS))
    keras_version: str | None = None
    declared = 0
    meta = path / "keras_metadata.pb"
    if not meta.is_file():
        findings.append(
            Finding(
                "keras_metadata.pb",
                "format",
                "SavedModel without Keras metadata (not written by tf.keras); cannot rebuild "
                "its layers safely",
            )
        )
    else:
        metadata = _parse_proto(meta, "keras_metadata")
        for node in metadata.nodes:
            node_config = parse_config_json(node.metadata, f"keras_metadata:{node.node_path}")
            if isinstance(node_config, dict):
                keras_version = keras_version or node_config.get("keras_version")
                node_findings, node_declared = check_config(
                    {k: v for k, v in node_config.items() if k != "build_input_shape"},
                    custom,
                    where=_node_label(node.node_path),
                )
                findings.extend(node_findings)
                if node.node_path == "root":
                    declared = node_declared
    stored = _savedmodel_stored_params(path)
    findings.extend(_params_finding(declared, stored))
    return SafetyReport(
        str(path),
        ModelFormat.SAVEDMODEL,
        keras_version,
        "tensorflow",
        tuple(dict.fromkeys(findings)),
        declared,
        stored,
    )


def _node_label(node_path: str) -> str:
    return "" if node_path == "root" else node_path.removeprefix("root.").replace(".", "/")


def _parse_proto(path: Path, kind: str) -> Any:
    from kerasaudit import _tf

    _tf.tf()  # protobuf classes live in the tensorflow package; nothing is executed
    try:
        if kind == "saved_model":
            from tensorflow.core.protobuf import saved_model_pb2

            message: Any = saved_model_pb2.SavedModel()
        else:
            from tf_keras.protobuf import saved_metadata_pb2

            message = saved_metadata_pb2.SavedMetadata()
        message.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInputError(f"{path}: corrupt {path.name} ({type(exc).__name__})") from exc
    return message


def _func_attrs(node: Any) -> Iterator[str]:
    for attr in node.attr.values():
        if attr.HasField("func"):
            yield attr.func.name
        if attr.HasField("list"):
            for fn in attr.list.func:
                yield fn.name


def _check_graph_ops(saved_model: Any, allowed: frozenset[str]) -> list[Finding]:
    findings: list[Finding] = []
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {fn.signature.name: fn for fn in graph.library.function}
        called_from_functions = {
            callee
            for fn in functions.values()
            for node in fn.node_def
            for callee in _func_attrs(node)
        }
        for node in graph.node:
            _check_op(node.op, node.name, "graph", allowed, findings, saver=False)
        for fname, fn in functions.items():
            is_saver = bool(_SAVER_FUNCTION_RE.match(fname)) and fname not in called_from_functions
            for node in fn.node_def:
                _check_op(node.op, node.name, fname, allowed, findings, saver=is_saver)
    return findings


def _check_op(
    op: str, node: str, scope: str, allowed: frozenset[str], findings: list[Finding], *, saver: bool
) -> None:
    if op in CHECKPOINT_OPS and (saver or scope == "graph"):
        return
    if op not in allowed or op in CHECKPOINT_OPS:
        finding = Finding(
            f"{scope}/{node}",
            "graph-op",
            f"graph op {op!r} is outside the allowlist of pure tensor operations",
        )
        if finding not in findings:
            findings.append(finding)


def _savedmodel_stored_params(path: Path) -> int | None:
    index = path / "variables" / "variables.index"
    data = list((path / "variables").glob("variables.data-*"))
    if not index.is_file() or not data:
        return None
    # Checkpoint data files hold the raw tensors; 4 bytes per float32 weight is an upper bound
    # on the count, which is what the comparison needs.
    return sum(f.stat().st_size for f in data) // 4
