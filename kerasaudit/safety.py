"""Static safety checks of a model file, done before Keras (or TensorFlow) ever sees it.

A model file is untrusted input. Keras' own ``safe_mode`` only blocks Lambda bytecode; a config
can still name arbitrary Keras-exported functions, a huge layer can exhaust memory while it is
being built, an archive can inflate to gigabytes or name paths outside itself, HDF5 files can
link to other files on disk, and tf-keras has no safe mode for ``.h5`` at all. So this module
reads the file with ``zipfile``/``h5py``/``json`` only, under caps on every size it reads (each
checked *before* the read), walks the whole config tree (nested models and wrappers included),
refuses anything outside an allowlist, and weighs what the config makes Keras allocate against
what the file stores.

Every malformed input ends as ``BadInputError`` (exit 2) or a finding (exit 3); an exception of
any other type escaping from here is a bug. Nothing here imports TensorFlow except the
SavedModel graph check, which parses protobufs only.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from kerasaudit._allowlist import (
    ALLOWED_CLASSES,
    ALLOWED_FUNCTIONS,
    ALLOWED_OPERATIONS,
    DENIED_CLASSES,
)
from kerasaudit._shapes import declared_weights
from kerasaudit.errors import BadInputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

# Every JSON document in a model (config.json, metadata.json, HDF5 model_config/training_config,
# SavedModel node metadata) is parsed under the same caps, all checked before the parser runs.
MAX_CONFIG_BYTES = 32 * 1024 * 1024  # a ResNet152 config is ~1 MB
MAX_CONFIG_DEPTH = 200  # JSON nesting; each nested model adds ~8 levels
MAX_CONFIG_CONTAINERS = 500_000  # '{' + '[' (EfficientNetB7: ~60,000); bounds parse memory
MAX_CONFIG_ITEMS = 2_000_000  # ',' separators
MAX_CONFIG_NODES = 2_000_000
# Keras spends ~5 ms of CPU building each layer and each call of one: bound both.
MAX_LAYERS = 2_500  # layer objects, nested ones included (NASNetLarge, the largest: ~1,040)
MAX_LAYER_CALLS = 10_000  # inbound nodes, all layers together
MAX_FINDINGS = 100  # kept per file; the rest are counted
MAX_INT_IN_CONFIG = 2**31 - 1
# A declared weight count this many times larger than what the file stores is refused: real
# files store every weight they declare (the inference in _shapes never over-counts).
PARAM_SLACK_FACTOR = 4
PARAM_SLACK_ABSOLUTE = 1_000_000
# And whatever the file claims to store, the config may not make Keras allocate more than this
# many bytes per byte of the file on disk (float32 weights take one byte per byte).
DECLARED_BYTES_FLOOR = 128 * 1024 * 1024
DECLARED_BYTES_PER_FILE_BYTE = 8
# .keras archives: Keras writes members stored (ratio 1); a recompressed archive of float
# weights deflates by ~10 %. Caps on members and on the total inflated size, not per member.
KERAS_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
# The only Keras layers that save assets (a vocabulary file); Keras extracts every member of an
# archive with assets to disk, so an archive without such a layer may not carry any.
ASSET_LAYERS = frozenset({"TextVectorization", "StringLookup", "IntegerLookup", "IndexLookup"})
MAX_ARCHIVE_MEMBERS = 1_000
MAX_ARCHIVE_BYTES = 64 * 1024**3
ARCHIVE_INFLATION_LIMIT = 10
ARCHIVE_INFLATION_FLOOR = 16 * 1024 * 1024
# HDF5: datasets whose declared size dwarfs the bytes on disk (fill-value / compression bombs),
# chunks larger than their dataset, too many objects or attributes, oversized attributes.
DATASET_INFLATION_LIMIT = 4
DATASET_INFLATION_FLOOR = 16 * 1024 * 1024
MAX_HDF5_OBJECTS = 100_000
MAX_HDF5_ATTRIBUTES = 100_000
MAX_ATTRIBUTE_BYTES = MAX_CONFIG_BYTES
# Filters HDF5 or h5py implement themselves; any other id is a plugin (a shared library).
BUILTIN_HDF5_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
# SavedModel directories are copied before they are checked: bound the copy.
MAX_SAVEDMODEL_ENTRIES = 10_000
MAX_SAVEDMODEL_DEPTH = 16

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
# The modules Keras 2 (tf.keras 2.13+, tf-keras) names in its own `.keras` files. Admitted only
# for a file whose metadata says Keras 2: such a file is never handed to Keras 3's loader as it
# is, but rebuilt from its class names alone (``kerasaudit.loading``), so no module is imported.
KERAS2_MODULES = frozenset(
    {
        f"{root}.{kind}"
        for root in ("keras.src.engine", "keras.engine", "tf_keras.src.engine")
        for kind in ("functional", "sequential", "training")
    }
)
# Where Keras 2's `.keras` says its TFOpLambda layer lives (admitted in such a file only).
TFOP_MODULES = frozenset(
    f"{root}.layers.core.tf_op_layer" for root in ("keras.src", "keras", "tf_keras.src")
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
# What reading a malformed archive or HDF5 file raises from the standard library and h5py.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,  # "File ... is encrypted, password required for extraction"
    UnicodeDecodeError,
    IndexError,
    KeyError,
    OverflowError,
)
_HDF5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError, OverflowError)


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
    declared_params_lower_bound: int  # weights the config makes Keras allocate (inferred)
    stored_params: int | None  # weight elements the file stores
    file_bytes: int = 0  # the file (or SavedModel directory) on disk
    # Findings in the training configuration (a .keras ``compile_config``, an HDF5
    # ``training_config``: a custom loss or metric, say), which is never loaded — models are
    # loaded uncompiled — so they are reported, not refused (size caps still refuse).
    ignored: tuple[Finding, ...] = ()

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
            "file_bytes": self.file_bytes,
            "ignored": [f.to_dict() for f in self.ignored],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SafetyReport:
        """The inverse of ``to_dict`` (reports cross the sandbox boundary as JSON)."""
        return cls(
            path=str(data["path"]),
            format=ModelFormat(data["format"]),
            keras_version=data.get("keras_version"),
            backend=data.get("backend"),
            findings=tuple(
                Finding(str(f["where"]), str(f["category"]), str(f["reason"]))
                for f in data.get("findings", [])
            ),
            declared_params_lower_bound=int(data.get("declared_params_lower_bound") or 0),
            stored_params=(
                None if data.get("stored_params") is None else int(data["stored_params"])
            ),
            file_bytes=int(data.get("file_bytes") or 0),
            ignored=tuple(
                Finding(str(f["where"]), str(f["category"]), str(f["reason"]))
                for f in data.get("ignored", [])
            ),
        )


class _Refused(Exception):
    def __init__(self, where: str, category: str, reason: str) -> None:
        super().__init__(reason)
        self.finding = Finding(where, category, reason)


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------


def check_local_path(path: Path) -> None:
    """Refuse what is not a local model path: remote URLs, missing paths, devices and FIFOs
    (whose reads never end), before anything opens it."""
    text = str(path)
    if "://" in text or text.startswith(("gs:", "s3:", "hf:")):
        raise BadInputError(f"{text}: only local model paths are accepted")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BadInputError(f"{path}: not a regular file or directory")


def detect_format(path: Path, shown: Path | None = None) -> ModelFormat:
    """Identify a model by its bytes, not its extension. Local paths only.

    ``shown`` is the name used in messages (the user's path when ``path`` is a private copy).
    """
    shown = shown or path
    check_local_path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return ModelFormat.SAVEDMODEL
        if (path / "config.json").is_file():
            raise BadInputError(
                f"{shown}: an unzipped .keras directory; zip it back into a .keras file"
            )
        raise BadInputError(
            f"{shown}: a directory that is not a model (no saved_model.pb); "
            "expected a .keras file, an .h5 file or a SavedModel directory"
        )
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
        userblock = head != HDF5_SIGNATURE and _hdf5_with_userblock(path)
    except OSError as exc:
        raise BadInputError(f"{shown}: cannot read it ({exc.strerror or exc})") from exc
    if head.startswith(ZIP_SIGNATURE):
        return ModelFormat.KERAS
    if head == HDF5_SIGNATURE or userblock:
        return ModelFormat.H5
    raise BadInputError(
        f"{shown}: not a model file (neither a .keras zip archive nor HDF5; "
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


def scan_savedmodel_tree(path: Path, shown: Path | None = None) -> int:
    """Bound a SavedModel directory before it is copied: entry count, depth, only regular
    files, directories and symlinks (which the copy keeps as links, for the check to refuse).
    Returns the total size of its files. Iterative: a deep tree cannot hit the recursion
    limit."""
    shown = shown or path
    total = entries = 0
    stack: list[tuple[Path, int]] = [(path, 0)]
    try:
        while stack:
            directory, depth = stack.pop()
            if depth > MAX_SAVEDMODEL_DEPTH:
                raise BadInputError(
                    f"{shown}: SavedModel directories nest deeper than "
                    f"{MAX_SAVEDMODEL_DEPTH} levels"
                )
            with os.scandir(directory) as listing:
                for entry in listing:
                    entries += 1
                    if entries > MAX_SAVEDMODEL_ENTRIES:
                        raise BadInputError(
                            f"{shown}: more than {MAX_SAVEDMODEL_ENTRIES} files in a SavedModel"
                        )
                    if entry.is_symlink():
                        continue
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if stat.S_ISDIR(mode):
                        stack.append((Path(entry.path), depth + 1))
                    elif stat.S_ISREG(mode):
                        total += entry.stat(follow_symlinks=False).st_size
                    else:
                        name = Path(entry.path).relative_to(path)
                        raise BadInputError(
                            f"{shown}: {name} is neither a file nor a directory (a device, "
                            "FIFO or socket)"
                        )
    except OSError as exc:
        raise BadInputError(f"{shown}: cannot read it ({exc.strerror or exc})") from exc
    return total


# --------------------------------------------------------------------------------------------
# Config walking (shared by every format)
# --------------------------------------------------------------------------------------------


@dataclass
class _Walk:
    custom: frozenset[str]
    modules: frozenset[str] = ALLOWED_MODULES
    findings: list[Finding] = field(default_factory=list)
    seen: set[Finding] = field(default_factory=set)
    suppressed: int = 0
    params_lower_bound: int = 0
    nodes: int = 0
    layers: int = 0
    calls: int = 0

    def add(self, where: str, category: str, reason: str) -> None:
        # One finding per (where, reason) keeps messages short on repetitive configs.
        finding = Finding(where or "<model>", category, reason)
        if finding in self.seen:
            return
        if len(self.findings) >= MAX_FINDINGS:
            self.suppressed += 1
            return
        self.seen.add(finding)
        self.findings.append(finding)


def parse_config_json(raw: bytes | str, where: str) -> Any:
    """Parse JSON under caps on size, containers, items and nesting depth. The counts are taken
    with ``str.count`` (C speed) before the parser allocates anything; the depth is measured on
    the parsed tree without recursion (the parser itself stops at Python's recursion limit)."""
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
    containers = raw.count("{") + raw.count("[")
    if containers > MAX_CONFIG_CONTAINERS:
        raise _Refused(
            where,
            "resources",
            f"config holds {containers} objects/arrays (cap {MAX_CONFIG_CONTAINERS})",
        )
    items = raw.count(",")
    if items > MAX_CONFIG_ITEMS:
        raise _Refused(where, "resources", f"config holds {items} items (cap {MAX_CONFIG_ITEMS})")
    try:
        parsed = json.loads(raw)
    except RecursionError as exc:
        raise _Refused(
            where, "resources", f"config nests deeper than {MAX_CONFIG_DEPTH} levels"
        ) from exc
    except ValueError as exc:
        raise _Refused(where, "format", f"config is not valid JSON ({exc})") from exc
    depth = json_depth(parsed)
    if depth > MAX_CONFIG_DEPTH:
        raise _Refused(
            where, "resources", f"config nests {depth} levels deep (cap {MAX_CONFIG_DEPTH})"
        )
    return parsed


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    best = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return best


def check_config(
    config: Any, custom: Iterable[str] = (), where: str = "", *, keras2_zip: bool = False
) -> tuple[list[Finding], int]:
    """Walk a (Keras 2 or 3) model config; return findings and the weights it declares.
    ``keras2_zip``: the config of a `.keras` file Keras 2 wrote (its engine modules admitted:
    :data:`KERAS2_MODULES`)."""
    modules = ALLOWED_MODULES | KERAS2_MODULES if keras2_zip else ALLOWED_MODULES
    walk = _Walk(custom=frozenset(custom), modules=modules)
    _walk_config(walk, config, where)
    findings = list(walk.findings)
    if walk.suppressed:
        findings.append(
            Finding(where or "<model>", findings[-1].category, f"{walk.suppressed} more findings")
        )
    return findings, max(walk.params_lower_bound, declared_weights(config))


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
                if walk.layers > MAX_LAYERS:
                    walk.add("", "resources", f"config has more than {MAX_LAYERS} layers")
                    return
            inbound = obj.get("inbound_nodes")
            if isinstance(inbound, list):
                walk.calls += len(inbound)
                if walk.calls > MAX_LAYER_CALLS:
                    walk.add(
                        "",
                        "resources",
                        f"config calls its layers more than {MAX_LAYER_CALLS} times",
                    )
                    return
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
                    # A list under a path key is data (a vocabulary's tokens), not a path.
                    _check_string(walk, key, item, layer_path, listed=True)
                elif isinstance(item, int) and not isinstance(item, bool):
                    _check_int(walk, key, item, layer_path)
                elif isinstance(item, dict | list):
                    stack.append((item, layer_path, key))


def _custom_lookup_name(obj: dict[str, Any], cls: str, config: Any) -> Any:
    """The name Keras looks a serialized object up by in ``custom_objects``: the function name
    for functions, else ``registered_name`` (``class_name`` when the key is absent)."""
    if cls == "function":
        return config
    return obj.get("registered_name", cls)


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
    if is_layer:
        walk.layers += 1
    label = f"layer '{here}'" if is_layer else (here or "model")
    if not isinstance(cls, str):
        walk.add(here, "format", f"{label}: class_name is not a string")
        return here
    # Admitted as custom only under the name Keras resolves it by: a registered_name naming a
    # custom class must not carry a built-in function (or any class_name) past the checks.
    lookup = _custom_lookup_name(obj, cls, config)
    if isinstance(lookup, str) and lookup in walk.custom:
        return here
    if module is not None and not isinstance(module, str):
        walk.add(here, "format", f"{label}: module is not a string")
        return here
    if cls == "TypeSpec" and str(obj.get("type_spec")) in ALLOWED_TYPE_SPECS:
        return here  # tf-keras SavedModel metadata describes input specs this way
    if cls.startswith("Custom>") and cls.removeprefix("Custom>") in ALLOWED_CLASSES:
        # tf.keras (Keras 2.11+) saves its own optimizers as "Custom>Adam" in training_config.
        cls = cls.removeprefix("Custom>")
    if cls == "TFOpLambda":  # Keras 2's record of a TF function applied to a tensor
        from kerasaudit._keras2_ops import replacement

        keras2 = module is None or (module in TFOP_MODULES and walk.modules >= KERAS2_MODULES)
        if keras2 and replacement(obj) is not None:
            return here  # rebuilt as a Keras 3 layer by the loader; no name is resolved
        function = config.get("function") if isinstance(config, dict) else None
        walk.add(
            here,
            "code",
            f"{label} is a Keras 2 TFOpLambda layer calling tf.{function}, which kerasaudit "
            "does not rebuild (it rebuilds arithmetic with a number or between two tensors, "
            "concatenations, elementwise activations, spatial means and maxima, and reshapes)",
        )
        return here
    if cls in DENIED_CLASSES or cls == "__lambda__":
        walk.add(here, "code", f"{label} is a {cls} layer, which runs code stored in the file")
        return here
    if isinstance(config, dict) and "function" in config and config.get("function_type"):
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
    if isinstance(module, str) and cls in ALLOWED_OPERATIONS.get(module, ()):
        # keras.ops applied to a Functional model's symbolic tensors (``x / 255``): an
        # operation of Keras's own, found by the module and class Keras saved it under.
        if registered not in (None, cls):
            walk.add(
                here, "custom", f"{label} ({cls}) is registered as custom object {registered!r}"
            )
        return here
    if cls not in ALLOWED_CLASSES:
        walk.add(
            here,
            "unknown-class",
            f"{label} has class {cls!r}, which is not a built-in Keras layer or object "
            "(name it in --custom-objects if you trust it)",
        )
        return here
    if module is not None and module not in walk.modules:
        walk.add(here, "module", f"{label} ({cls}) names module {module!r}, outside Keras")
    if registered not in (None, cls) and not (cls == "Functional" and registered == "Functional"):
        walk.add(here, "custom", f"{label} ({cls}) is registered as custom object {registered!r}")
    if isinstance(config, dict):
        walk.params_lower_bound += _declared_params_lower_bound(cls, config, obj)
    return here


def class_names(config: Any) -> set[str]:
    """Every ``class_name`` string in a config tree."""
    names: set[str] = set()
    stack: list[Any] = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                names.add(item["class_name"])
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return names


def _check_string(
    walk: _Walk, key: str, value: str, layer_path: str, *, listed: bool = False
) -> None:
    if key in ("name", "class_name", "module", "registered_name"):
        return
    if (key in PATH_KEYS and value and not listed) or _PATH_RE.search(value):
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
    """Per-object lower bound, for objects outside any model graph (the graph inference in
    ``_shapes`` covers layers inside one). Never over-counts."""

    def prod(values: list[int]) -> int:
        return math.prod(max(1, v) for v in values) if values else 1

    kernel = prod(_ints(config.get("kernel_size")))
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        multiplier = _ints(config.get("depth_multiplier"))
        return max(1, multiplier[0] if multiplier else 1) * kernel
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
# HDF5 structure (links, virtual/external datasets, filters, bombs, attributes), shared by .h5
# and the .keras weights
# --------------------------------------------------------------------------------------------


def largest_global_heap(fileobj: IO[bytes]) -> int:
    """The largest HDF5 global heap collection in a file, in bytes.

    Variable-length data (h5py writes every ``str`` attribute this way) lives in global heap
    collections; ``get_storage_size()`` reports only the 16-byte reference, so a 40 MB string
    attribute looks tiny until it is read. No object is larger than its collection, so the
    largest collection header ("GCOL", version 1, its length) bounds every variable-length
    value before any is read."""
    # Read in windows (an mmap of a multi-gigabyte file would count against RLIMIT_AS),
    # overlapping by a header's length so none is split unseen.
    best = 0
    window = 16 << 20
    fileobj.seek(0)
    carry = b""
    while True:
        block = fileobj.read(window)
        if not block:
            break
        data = carry + block
        pos = data.find(b"GCOL")
        while pos != -1 and pos + 16 <= len(data):
            if data[pos + 4] == 1 and data[pos + 5 : pos + 8] == b"\0\0\0":
                best = max(best, int.from_bytes(data[pos + 8 : pos + 16], "little"))
            pos = data.find(b"GCOL", pos + 1)
        carry = data[-15:]
    return best


@dataclass
class _Hdf5Tally:
    stored: int = 0  # weight elements (float/int/complex datasets outside optimizer state)
    declared_bytes: int = 0
    disk_bytes: int = 0
    objects: int = 0
    attributes: int = 0


def _check_hdf5_file(h5file: Any, fileobj: IO[bytes], where: str, findings: list[Finding]) -> int:
    """Check one open HDF5 file (its attributes, links and datasets) before anything reads a
    value from it. Returns the number of stored weight elements."""
    fileobj.seek(0, os.SEEK_END)
    file_size = fileobj.tell()
    # No variable-length value can be larger than the file; only bigger files need the scan.
    if file_size > MAX_ATTRIBUTE_BYTES:
        heap = largest_global_heap(fileobj)
        if heap > MAX_ATTRIBUTE_BYTES:
            raise _Refused(
                where,
                "resources",
                f"a variable-length value (attribute or string) of up to {heap} bytes "
                f"(cap {MAX_ATTRIBUTE_BYTES})",
            )
    tally = _Hdf5Tally()
    _check_attributes(h5file, where, "/", tally)
    _check_hdf5_tree(h5file, where, findings, tally)
    if tally.declared_bytes > DATASET_INFLATION_FLOOR + DATASET_INFLATION_LIMIT * tally.disk_bytes:
        findings.append(
            Finding(
                where,
                "resources",
                f"datasets declare {tally.declared_bytes} bytes but store only {tally.disk_bytes}",
            )
        )
    return tally.stored


def _check_attributes(obj: Any, where: str, name: str, tally: _Hdf5Tally) -> None:
    """Sizes of every attribute of ``obj``, from their headers (nothing is read)."""
    attrs = obj.attrs
    for key in attrs:
        tally.attributes += 1
        if tally.attributes > MAX_HDF5_ATTRIBUTES:
            raise _Refused(where, "resources", f"more than {MAX_HDF5_ATTRIBUTES} attributes")
        size = _attribute_bytes(attrs.get_id(key))
        if size > MAX_ATTRIBUTE_BYTES:
            raise _Refused(
                f"{where}:{name}",
                "resources",
                f"attribute {key!r} is {size} bytes (cap {MAX_ATTRIBUTE_BYTES})",
            )


def _attribute_bytes(attr_id: Any) -> int:
    """Elements × element size, from the attribute's header (H5Aget_storage_size fails on
    empty attributes). Variable-length values count their 16-byte references here; the
    global-heap bound in ``_check_hdf5_file`` covers what they point to."""
    return int(attr_id.get_space().get_select_npoints()) * int(attr_id.get_type().get_size())


def _check_hdf5_tree(h5file: Any, where: str, findings: list[Finding], tally: _Hdf5Tally) -> None:
    """Walk every group by hard links only."""
    import h5py

    stack: list[tuple[Any, str]] = [(h5file, "")]
    seen: set[Any] = set()
    while stack:
        group, prefix = stack.pop()
        for key in group:
            tally.objects += 1
            if tally.objects > MAX_HDF5_OBJECTS:
                raise _Refused(where, "resources", f"more than {MAX_HDF5_OBJECTS} HDF5 objects")
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
            _check_attributes(obj, where, name, tally)
            if isinstance(obj, h5py.Group):
                stack.append((obj, name))
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, f"{where}:{name}", findings, tally)
                if obj.dtype.kind in "fiuc" and "optimizer" not in name:
                    tally.stored += int(obj.size or 0)


def _check_dataset(dataset: Any, where: str, findings: list[Finding], tally: _Hdf5Tally) -> None:
    from h5py import h5d

    if dataset.is_virtual:
        findings.append(Finding(where, "hdf5", "virtual dataset"))
        return
    if dataset.external:
        findings.append(Finding(where, "hdf5", "dataset stored in an external file"))
        return
    plist = dataset.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code = int(plist.get_filter(index)[0])
        if code not in BUILTIN_HDF5_FILTERS:
            findings.append(
                Finding(
                    where,
                    "hdf5",
                    f"dataset uses HDF5 filter {code}, a plugin (HDF5 would load a shared "
                    "library to read it)",
                )
            )
    itemsize = int(dataset.dtype.itemsize)
    size = int(dataset.size or 0)
    declared = size * itemsize
    if plist.get_layout() == h5d.CHUNKED:
        chunk = math.prod(int(c) for c in plist.get_chunk()) * itemsize
        # Reading one element decompresses a whole chunk: it may not dwarf its dataset.
        if chunk > max(declared, 1 << 20):
            findings.append(
                Finding(
                    where,
                    "resources",
                    f"chunks of {chunk} bytes for a dataset of {declared} bytes",
                )
            )
    tally.declared_bytes += declared
    tally.disk_bytes += int(dataset.id.get_storage_size())


def _read_attr_capped(h5file: Any, name: str, where: str) -> Any:
    """Read a string attribute whose size ``_check_hdf5_file`` has bounded."""
    if name not in h5file.attrs:
        return None
    size = _attribute_bytes(h5file.attrs.get_id(name))
    if size > MAX_ATTRIBUTE_BYTES:
        raise _Refused(
            where, "resources", f"attribute {name} is {size} bytes (cap {MAX_ATTRIBUTE_BYTES})"
        )
    value = h5file.attrs[name]
    if hasattr(value, "decode"):
        value = value.decode("utf-8", errors="replace")
    if hasattr(value, "shape") and getattr(value, "shape", None) == ():
        value = value[()]  # a scalar numpy value
        if hasattr(value, "decode"):
            value = value.decode("utf-8", errors="replace")
    if value is not None and not isinstance(value, str):
        raise BadInputError(f"{where}: attribute {name} is not a string")
    return value


# --------------------------------------------------------------------------------------------
# Per-format checks
# --------------------------------------------------------------------------------------------


def check_model_file(
    path: Path, custom: Iterable[str] = (), *, shown: Path | None = None
) -> SafetyReport:
    """Check a model without executing anything in it. Raises BadInputError for non-models.

    ``shown`` is the name used in messages and findings (the user's path when ``path`` is a
    private copy)."""
    shown = shown or path
    fmt = detect_format(path, shown)
    custom_names = frozenset(custom)
    try:
        if fmt is ModelFormat.KERAS:
            return _check_keras_zip(path, custom_names, shown)
        if fmt is ModelFormat.H5:
            return _check_h5(path, custom_names, shown)
        return _check_savedmodel(path, custom_names, shown)
    except _Refused as refused:
        return SafetyReport(str(shown), fmt, None, None, (refused.finding,), 0, None, _size(path))
    except RecursionError as exc:  # belt and braces: every walk here is iterative
        raise BadInputError(f"{shown}: nested too deeply to check") from exc
    except MemoryError:
        finding = Finding("<model>", "resources", "checking it exhausted the memory limit")
        return SafetyReport(str(shown), fmt, None, None, (finding,), 0, None, _size(path))


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _params_finding(declared: int, stored: int | None, file_bytes: int) -> list[Finding]:
    findings = []
    if stored is not None and declared > PARAM_SLACK_FACTOR * stored + PARAM_SLACK_ABSOLUTE:
        findings.append(
            Finding(
                "<model>",
                "resources",
                f"the config declares at least {declared:,} weights but the file stores "
                f"{stored:,}; building it would allocate memory the file never fills",
            )
        )
    elif 4 * declared > DECLARED_BYTES_FLOOR + DECLARED_BYTES_PER_FILE_BYTE * file_bytes:
        findings.append(
            Finding(
                "<model>",
                "resources",
                f"the config declares at least {declared:,} weights ({4 * declared:,} bytes) "
                f"for a file of {file_bytes:,} bytes",
            )
        )
    return findings


def _member_problem(name: str) -> tuple[str, str] | None:
    """(category, reason) when an archive member's name is not a plain relative path inside
    the archive, or not one a Keras archive holds."""
    if not name or "\x00" in name or any(ord(ch) < 32 for ch in name):
        return "path", f"archive member {name!r} has a control character in its name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "path", f"archive member {name!r} is an absolute path"
    if "\\" in name or ".." in name.split("/"):
        return "path", f"archive member {name!r} points outside the archive"
    if name in KERAS_MEMBERS or (name.startswith("assets/") and name != "assets/.."):
        return None
    if name == "model.weights.npz":
        return (
            "format",
            "the weights are stored as model.weights.npz, which is not checked; "
            "re-save the model with model.weights.h5",
        )
    return (
        "format",
        f"unexpected archive member {name!r} (a Keras archive holds config.json, "
        "metadata.json, model.weights.h5 and assets/)",
    )


def _check_keras_zip(path: Path, custom: frozenset[str], shown: Path) -> SafetyReport:
    where = shown.name
    file_bytes = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise BadInputError(f"{shown}: corrupt .keras archive ({_reason(exc)})") from exc
    findings: list[Finding] = []
    with archive:
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise _Refused(
                where, "resources", f"{len(infos)} archive members (cap {MAX_ARCHIVE_MEMBERS})"
            )
        total = sum(info.file_size for info in infos)
        cap = min(MAX_ARCHIVE_BYTES, ARCHIVE_INFLATION_FLOOR + ARCHIVE_INFLATION_LIMIT * file_bytes)
        if total > cap:
            biggest = max(infos, key=lambda info: info.file_size)
            raise _Refused(
                f"{where}:{biggest.filename}",
                "resources",
                f"{len(infos)} archive members inflate to {total:,} bytes from {file_bytes:,} "
                f"on disk (cap {cap:,})",
            )
        first = min((info.header_offset for info in infos), default=0)
        if first > 0:
            # zipfile finds an archive from its end and tolerates bytes before it; a Keras
            # archive has none. Whatever else those bytes are (an HDF5 file behind a user
            # block, say), nothing should be able to read this file as two different things.
            findings.append(
                Finding(
                    where,
                    "format",
                    f"{first} bytes of something else precede the archive (a polyglot file)",
                )
            )
        names: set[str] = set()
        for info in infos:
            problem = _member_problem(info.filename)
            if problem is not None:
                findings.append(Finding(f"{where}:{info.filename}", *problem))
            if info.filename in names:
                findings.append(
                    Finding(
                        f"{where}:{info.filename}",
                        "format",
                        f"two archive members are named {info.filename!r}",
                    )
                )
            names.add(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                findings.append(
                    Finding(f"{where}:{info.filename}", "path", "archive member is a symlink")
                )
            if info.flag_bits & 0x1:
                raise BadInputError(f"{shown}: archive member {info.filename!r} is encrypted")
            if info.compress_type not in (
                zipfile.ZIP_STORED,
                zipfile.ZIP_DEFLATED,
                zipfile.ZIP_BZIP2,
                zipfile.ZIP_LZMA,
            ):
                raise BadInputError(
                    f"{shown}: archive member {info.filename!r} uses compression method "
                    f"{info.compress_type}, which zipfile cannot read"
                )
        if "config.json" not in names:
            raise BadInputError(f"{shown}: .keras archive without config.json (not a Keras model)")
        if "model.weights.h5" not in names:
            findings.append(
                Finding(
                    where,
                    "format",
                    "the archive has no model.weights.h5, so the weights its config makes "
                    "Keras allocate cannot be weighed against the file",
                )
            )
        return _check_keras_members(archive, infos, custom, shown, findings, file_bytes)


def _check_keras_members(
    archive: zipfile.ZipFile,
    infos: list[zipfile.ZipInfo],
    custom: frozenset[str],
    shown: Path,
    findings: list[Finding],
    file_bytes: int,
) -> SafetyReport:
    """Read every member once (so CRC, truncation and stream errors surface here, not in
    Keras), keep the JSON documents, spool the weights to a temporary file and check them."""
    import tempfile

    where = shown.name
    documents: dict[str, bytes] = {}
    stored: int | None = None
    with tempfile.TemporaryFile(prefix="kerasaudit-weights-") as weights:
        for info in infos:
            name = info.filename
            keep = name in ("config.json", "metadata.json")
            if keep and info.file_size > MAX_CONFIG_BYTES:
                raise _Refused(
                    f"{where}:{name}",
                    "resources",
                    f"{name} is {info.file_size} bytes (cap {MAX_CONFIG_BYTES})",
                )
            sink: IO[bytes] | None = weights if name == "model.weights.h5" else None
            data = _read_member(archive, info, shown, sink, keep)
            if keep:
                documents[name] = data
        config = parse_config_json(documents["config.json"], f"{where}:config.json")
        metadata = (
            parse_config_json(documents["metadata.json"], f"{where}:metadata.json")
            if "metadata.json" in documents
            else {}
        )
        training, config = _training_part(config, "compile_config")
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        keras2 = is_keras2(version)
        walk_findings, declared = check_config(config, custom, keras2_zip=keras2)
        findings.extend(walk_findings)
        ignored = _not_loaded(training, custom, "compile_config", findings)
        assets = [info.filename for info in infos if info.filename.startswith("assets/")]
        if assets and not custom and not (class_names(config) & ASSET_LAYERS):
            findings.append(
                Finding(
                    f"{where}:{assets[0]}",
                    "format",
                    f"{len(assets)} asset member(s) in a model none of whose layers saves "
                    "assets (Keras would extract them all to disk)",
                )
            )
        has_weights = any(info.filename == "model.weights.h5" for info in infos)
        if has_weights and not any(f.category == "resources" for f in findings):
            stored = _check_zipped_weights(weights, shown, findings)
    findings.extend(_params_finding(declared, stored, file_bytes))
    return SafetyReport(
        str(shown),
        ModelFormat.KERAS,
        str(version) if version else None,
        "tensorflow" if version else None,
        tuple(findings),
        declared,
        stored,
        file_bytes,
        tuple(ignored),
    )


def is_keras2(version: Any) -> bool:
    """Whether a recorded ``keras_version`` is Keras 1 or 2."""
    return str(version or "").startswith(("1.", "2."))


def _training_part(config: Any, key: str) -> tuple[Any, Any]:
    """(the training configuration under ``key``, ``config`` without it)."""
    if not isinstance(config, dict) or key not in config:
        return None, config
    rest = {k: v for k, v in config.items() if k != key}
    return config[key], rest


def _not_loaded(
    training: Any, custom: frozenset[str], where: str, findings: list[Finding]
) -> list[Finding]:
    """Walk a training configuration, which the loader never reads (models load uncompiled):
    its findings are returned to be reported, except those about resources (the walk itself
    is capped like any other), which are added to ``findings`` and refuse the model."""
    if training is None:
        return []
    found, _ = check_config(training, custom, where=where)
    findings.extend(f for f in found if f.category == "resources")
    return [f for f in found if f.category != "resources"]


def _read_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    shown: Path,
    sink: IO[bytes] | None,
    keep: bool,
) -> bytes:
    """Read one member to its end, in chunks (zipfile verifies its CRC at the end)."""
    kept: list[bytes] = []
    read = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(1 << 20):
                read += len(chunk)
                if sink is not None:
                    sink.write(chunk)
                if keep:
                    kept.append(chunk)
    except _ZIP_ERRORS as exc:
        raise BadInputError(
            f"{shown}: corrupt .keras archive: member {info.filename!r}: {_reason(exc)}"
        ) from exc
    if read != info.file_size:
        raise BadInputError(
            f"{shown}: corrupt .keras archive: member {info.filename!r} holds {read} bytes, "
            f"its header says {info.file_size}"
        )
    return b"".join(kept)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _check_zipped_weights(weights: IO[bytes], shown: Path, findings: list[Finding]) -> int:
    import h5py

    weights.flush()
    weights.seek(0)
    where = f"{shown.name}:model.weights.h5"
    try:
        with h5py.File(weights, "r") as h5file:
            return _check_hdf5_file(h5file, weights, where, findings)
    except _HDF5_ERRORS as exc:
        raise BadInputError(
            f"{shown}: corrupt model.weights.h5 inside the archive ({_reason(exc)})"
        ) from exc


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except _ZIP_ERRORS:
        return False


def _check_h5(path: Path, custom: frozenset[str], shown: Path) -> SafetyReport:
    import h5py

    where = shown.name
    file_bytes = path.stat().st_size
    findings: list[Finding] = []
    if _is_zip(path):
        findings.append(
            Finding(where, "format", "the HDF5 file is also a zip archive (a polyglot file)")
        )
    try:
        with path.open("rb") as raw, h5py.File(path, "r") as h5file:
            stored = _check_hdf5_file(h5file, raw, where, findings)
            model_config = _read_attr_capped(h5file, "model_config", f"{where}:model_config")
            training_config = _read_attr_capped(
                h5file, "training_config", f"{where}:training_config"
            )
            keras_version = _read_attr_capped(h5file, "keras_version", where)
            backend = _read_attr_capped(h5file, "backend", where)
    except _HDF5_ERRORS as exc:
        raise BadInputError(f"{shown}: corrupt or truncated HDF5 file ({_reason(exc)})") from exc
    if model_config is None:
        raise BadInputError(
            f"{shown}: HDF5 file without a model config (a weights-only file or not a Keras model)"
        )
    config = parse_config_json(model_config, f"{where}:model_config")
    walk_findings, declared = check_config(config, custom)
    findings.extend(walk_findings)
    ignored: list[Finding] = []
    if training_config is not None:
        tc = parse_config_json(training_config, f"{where}:training_config")
        ignored = _not_loaded(tc, custom, "training_config", findings)
    findings.extend(_params_finding(declared, stored, file_bytes))
    return SafetyReport(
        str(shown),
        ModelFormat.H5,
        str(keras_version) if keras_version else None,
        str(backend) if backend else None,
        tuple(findings),
        declared,
        stored,
        file_bytes,
        tuple(ignored),
    )


# ---- SavedModel ---------------------------------------------------------------------------

# Ops that touch files, processes, the network or Python. They may appear only inside the
# checkpoint save/restore functions that every SavedModel carries (see _check_graph_ops).
CHECKPOINT_OPS = frozenset(
    {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec"}
)
_SAVER_FUNCTION_RE = re.compile(r"^__inference__traced_(save|restore)_\d+$")


def _check_savedmodel(path: Path, custom: frozenset[str], shown: Path) -> SafetyReport:
    from kerasaudit._graph_ops import ALLOWED_GRAPH_OPS

    file_bytes = scan_savedmodel_tree(path, shown)
    findings: list[Finding] = []
    for item in path.rglob("*"):
        if item.is_symlink():
            findings.append(
                Finding(str(item.relative_to(path)), "path", "symbolic link inside the SavedModel")
            )
    pb = path / "saved_model.pb"
    if pb.stat().st_size > 1 << 31:
        raise _Refused("saved_model.pb", "resources", "saved_model.pb is larger than 2 GiB")
    saved_model = _parse_proto(pb, "saved_model", shown)
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
        if meta.stat().st_size > 8 * MAX_CONFIG_BYTES:
            raise _Refused(
                "keras_metadata.pb",
                "resources",
                f"keras_metadata.pb is larger than {8 * MAX_CONFIG_BYTES} bytes",
            )
        metadata = _parse_proto(meta, "keras_metadata", shown)
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
    findings.extend(_params_finding(declared, stored, file_bytes))
    return SafetyReport(
        str(shown),
        ModelFormat.SAVEDMODEL,
        keras_version,
        "tensorflow",
        tuple(dict.fromkeys(findings)),
        declared,
        stored,
        file_bytes,
    )


def _node_label(node_path: str) -> str:
    return "" if node_path == "root" else node_path.removeprefix("root.").replace(".", "/")


def _parse_proto(path: Path, kind: str, shown: Path) -> Any:
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
        raise BadInputError(f"{shown}: corrupt {path.name} ({type(exc).__name__})") from exc
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
