"""Model loading: copy, identify, check statically, then load with Keras in safe mode.

Order matters and is the point of this module:
1. the file is copied into a private temporary directory, and everything after looks only at
   the copy: the format is detected once, *on the copy*, and the loader is chosen from what
   the copy is (a file swapped after it was opened, or a polyglot, cannot get a loader the
   check did not assume);
2. ``kerasaudit.safety`` reads it without executing anything and refuses it unless
   ``--unsafe``;
3. only then is it handed to Keras, with ``safe_mode=True``, ``compile=False``, inside Keras'
   ``SafeModeScope`` (which also overrides a process-wide ``enable_unsafe_deserialization()``).

Steps 2 and 3 first run in a resource-limited child process (``kerasaudit.sandbox``): the
check, then a canary load; the caller loads the same private copy only after the canary
succeeded within the limits. ``KERASAUDIT_SANDBOX=0`` runs both in-process instead.
TF SavedModel directories are read with tf-keras (Keras 3 cannot rebuild layers from them), then
converted to Keras 3 through a legacy ``.h5`` that goes through the same checks again. A
``.keras`` file Keras 2 wrote (tf.keras 2.13–2.15, tf-keras) is rebuilt by Keras 3's legacy
loader from its class names alone (no module it names is imported), given its weights, and
saved as a Keras 3 ``.keras`` that goes through the same checks again.
Temporary files (the copy, Keras' extraction directories, the children's TMPDIR) all live in
the private directory, which is removed however the load ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasaudit import _tf, sandbox
from kerasaudit.errors import BadInputError, ModelResourceError, UnsafeModelError
from kerasaudit.safety import (
    ModelFormat,
    SafetyReport,
    check_local_path,
    check_model_file,
    detect_format,
    is_keras2,
    scan_savedmodel_tree,
)


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # keras.Model (Keras 3)
    path: Path
    format: ModelFormat
    keras_version: str | None  # the Keras version that saved the file, when recorded
    backend: str | None
    safety: SafetyReport
    unsafe: bool  # loaded with --unsafe (checks reported, not enforced)
    custom_objects: tuple[str, ...]
    # the output to audit, by name, for a model with several (the library's ``output=``; the
    # CLI's --model-output); None: the only score-vector output
    output: str | None = None


def load_custom_objects(path: Path) -> dict[str, Any]:
    """Import a user's ``--custom-objects FILE.py``: its ``custom_objects`` dict if it defines
    one, else every public class and function defined in the file. The user vouches for it."""
    if not path.is_file() or path.suffix != ".py":
        raise BadInputError(f"--custom-objects {path}: expected an existing .py file")
    spec = importlib.util.spec_from_file_location(f"kerasaudit_custom_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise BadInputError(f"--custom-objects {path}: cannot import it")
    module = importlib.util.module_from_spec(spec)
    keras = _tf.keras()
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise BadInputError(f"--custom-objects {path}: importing it failed: {exc}") from exc
    explicit = getattr(module, "custom_objects", None)
    if isinstance(explicit, dict):
        objects = dict(explicit)
    else:
        objects = {
            name: obj
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        }
    # Objects registered with @register_keras_serializable are saved under "package>Name".
    for obj in list(objects.values()):
        registered = keras.saving.get_registered_name(obj)
        if registered:
            objects.setdefault(registered, obj)
    return objects


def load_model(
    path: Path,
    *,
    unsafe: bool = False,
    custom_objects_file: Path | None = None,
) -> LoadedModel:
    """Load an untrusted model. Raises BadInputError (exit 2) or UnsafeModelError (exit 3)."""
    path = Path(path)
    check_local_path(path)
    custom = load_custom_objects(custom_objects_file) if custom_objects_file else {}
    sandboxed = sandbox.enabled()
    with _private_directory() as private:
        copy, fmt = _private_copy(path, private)
        if sandboxed:
            report = sandbox.run_check(copy, frozenset(custom), path, private / "check")
        else:
            report = check_model_file(copy, custom, shown=path)
        if not report.safe and not unsafe:
            first = report.findings[0]
            more = len(report.findings) - 1
            reason = first.reason + (f" (and {more} more finding(s))" if more else "")
            raise UnsafeModelError(first.where, reason)
        # Absolute: the sandboxed child works in a directory of its own.
        custom_file = str(custom_objects_file.resolve()) if custom_objects_file else None
        request = {
            "copy": str(copy),
            "format": str(fmt),
            "keras_version": report.keras_version,
            "unsafe": unsafe,
            "custom_objects_file": custom_file,
            "converted": str(private / _converted_name(fmt, report.keras_version)),
            "shown": str(path),
        }
        if sandboxed:
            _tf.keras()  # imported before the fork, so the canary shares the parent's import
            sandbox.run_load(request, custom, report.file_bytes, private / "load")
            target = _vetted_target(request, custom, unsafe)
        else:
            target = prepare(request, custom)
        with _temporary_files_in(private / "tmp"):
            model = _load_keras(target, custom, unsafe)
    return LoadedModel(
        model=model,
        path=path,
        format=fmt,
        keras_version=report.keras_version,
        backend=report.backend,
        safety=report,
        unsafe=unsafe,
        custom_objects=tuple(sorted(custom)),
    )


def _converted_name(fmt: ModelFormat, keras_version: str | None) -> str:
    return "converted.keras" if _is_keras2_zip(fmt, keras_version) else "converted.h5"


def _is_keras2_zip(fmt: ModelFormat, keras_version: Any) -> bool:
    return fmt is ModelFormat.KERAS and is_keras2(keras_version)


def prepare(request: dict[str, Any], custom: dict[str, Any]) -> Path:
    """What Keras 3 will load, from a checked private copy: the copy itself (a Keras 2 ``.h5``
    repaired in place first), or a conversion (a SavedModel's to ``.h5``, a Keras 2
    ``.keras``'s to a Keras 3 ``.keras``), checked again. Runs once per load: in the sandboxed
    canary, or in-process when the sandbox is off."""
    copy = Path(request["copy"])
    fmt = ModelFormat(request["format"])
    unsafe = bool(request["unsafe"])
    if fmt is ModelFormat.SAVEDMODEL:
        return _convert_savedmodel(copy, Path(request["converted"]), custom, unsafe)
    if _is_keras2_zip(fmt, request.get("keras_version")):
        return _convert_keras2_zip(copy, Path(request["converted"]), custom, unsafe)
    if fmt is ModelFormat.H5 and is_keras2(request.get("keras_version")):
        _repair_legacy_h5(copy)
    return copy


def prepare_and_load(request: dict[str, Any], custom: dict[str, Any]) -> None:
    """The sandboxed canary: prepare and load exactly as the caller will, then discard."""
    target = prepare(request, custom)
    _load_keras(target, custom, bool(request["unsafe"]))


def _vetted_target(request: dict[str, Any], custom: dict[str, Any], unsafe: bool) -> Path:
    """After a successful canary: the copy, or the conversion the canary wrote (whose check
    is repeated here; it is cheap and the caller should not take a child's word for it)."""
    fmt = ModelFormat(request["format"])
    if fmt is not ModelFormat.SAVEDMODEL and not _is_keras2_zip(fmt, request.get("keras_version")):
        return Path(request["copy"])
    converted = Path(request["converted"])
    _refuse_unless_safe(check_model_file(converted, custom), unsafe)
    return converted


def _refuse_unless_safe(report: SafetyReport, unsafe: bool) -> None:
    if not report.safe and not unsafe:
        first = report.findings[0]
        raise UnsafeModelError(first.where, first.reason)


@contextlib.contextmanager
def _private_directory() -> Iterator[Path]:
    private = Path(tempfile.mkdtemp(prefix="kerasaudit-model-")).resolve()
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _private_copy(path: Path, private: Path) -> tuple[Path, ModelFormat]:
    """Copy the model into ``private``, detect its format on the copy, and name the copy for
    the loader that format needs (Keras picks its loader by extension)."""
    try:
        if path.is_dir():
            detect_format(path)  # "not a model" / "unzipped .keras" messages before copying
            scan_savedmodel_tree(path)  # bounded: entry count, depth, no devices or FIFOs
            copy = private / "savedmodel"
            # symlinks=True copies links as links, so the safety check sees (and refuses) them.
            shutil.copytree(path, copy, symlinks=True)
        else:
            copy = private / "original"
            shutil.copyfile(path, copy)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    fmt = detect_format(copy, shown=path)
    if fmt is ModelFormat.SAVEDMODEL:
        return copy, fmt
    named = private / ("model.keras" if fmt is ModelFormat.KERAS else "model.h5")
    copy.rename(named)
    return named, fmt


@contextlib.contextmanager
def _temporary_files_in(directory: Path) -> Iterator[None]:
    """Keras extracts archive assets with ``tempfile``: keep them in the private directory."""
    directory.mkdir(exist_ok=True)
    saved = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def _load_keras(copy: Path, custom: dict[str, Any], unsafe: bool) -> Any:
    keras = _tf.keras()
    from keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(not unsafe), keras.saving.custom_object_scope(custom):
            return keras.saving.load_model(
                copy, custom_objects=custom, compile=False, safe_mode=not unsafe
            )
    except RecursionError as exc:
        raise BadInputError("the model nests too deeply for Keras to load it") from exc
    except Exception as exc:
        exhausted = _resource_exhaustion(exc)
        if exhausted is not None:
            raise ModelResourceError(
                "<model>", f"building it exhausted memory ({exhausted})"
            ) from exc
        raise BadInputError(f"Keras could not load the model: {_first_line(exc)}") from exc


def _resource_exhaustion(exc: BaseException) -> str | None:
    """The name of a MemoryError / TensorFlow OOM anywhere in ``exc``'s chain (Keras wraps
    build errors in TypeError/ValueError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, MemoryError) or name == "ResourceExhaustedError":
            return name
        current = current.__cause__ or current.__context__
    return None


def _convert_savedmodel(copy: Path, h5: Path, custom: dict[str, Any], unsafe: bool) -> Path:
    _tf.tf()
    import tf_keras

    try:
        legacy = tf_keras.models.load_model(copy, custom_objects=custom, compile=False)
    except Exception as exc:
        raise BadInputError(f"tf-keras could not load the SavedModel: {_first_line(exc)}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "HDF5 is legacy": we know, it is a bridge
            legacy.save(h5, save_format="h5", include_optimizer=False)
    except Exception as exc:
        raise BadInputError(
            f"the SavedModel loads in tf-keras but cannot be converted to Keras 3: "
            f"{_first_line(exc)}"
        ) from exc
    _refuse_unless_safe(check_model_file(h5, custom), unsafe)
    _repair_legacy_h5(h5)
    return h5


def _convert_keras2_zip(copy: Path, converted: Path, custom: dict[str, Any], unsafe: bool) -> Path:
    """A Keras 2 ``.keras`` (checked): its config, with the modules it names dropped and Keras 2's
    quirks repaired, rebuilt by Keras 3's legacy loader (which resolves built-in classes by
    name), its weights loaded by layer path, saved as Keras 3 ``.keras`` and checked again."""
    import json
    import zipfile

    keras = _tf.keras()
    from keras.src.legacy.saving import saving_utils
    from keras.src.saving.serialization_lib import SafeModeScope

    weights = converted.with_name("keras2.weights.h5")
    try:
        with zipfile.ZipFile(copy) as archive:  # members already read under the caps
            config = json.loads(archive.read("config.json"))
            with archive.open("model.weights.h5") as source, weights.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"cannot read the Keras 2 .keras file: {_first_line(exc)}") from exc
    _drop_modules(config)
    repair_keras2_config(config)
    try:
        with SafeModeScope(not unsafe), keras.saving.custom_object_scope(custom):
            model = saving_utils.model_from_config(config, custom_objects=custom)
            model.load_weights(weights)
    except RecursionError as exc:
        raise BadInputError("the model nests too deeply for Keras to load it") from exc
    except Exception as exc:
        raise BadInputError(
            f"Keras 3 could not rebuild the Keras 2 .keras model: {_first_line(exc)}"
        ) from exc
    model.save(converted)
    _refuse_unless_safe(check_model_file(converted, custom), unsafe)
    return converted


def _drop_modules(config: Any) -> None:
    """Remove, in place, the ``module`` and ``registered_name`` of every serialized object, so
    that Keras 3's legacy loader resolves each by its class name (built-in, or custom)."""
    stack: list[Any] = [config]
    while stack:
        obj = stack.pop()
        if isinstance(obj, list):
            stack.extend(obj)
        elif isinstance(obj, dict):
            if "class_name" in obj:
                obj.pop("module", None)
                obj.pop("registered_name", None)
            stack.extend(v for v in obj.values() if isinstance(v, dict | list))


def _repair_legacy_h5(copy: Path) -> None:
    """Fix Keras 2 quirks Keras 3's legacy loader trips on, in our private copy only."""
    import json

    import h5py

    try:
        with h5py.File(copy, "r+") as h5file:
            raw = h5file.attrs["model_config"]
            # Already read and parsed under the safety caps; this is the same checked copy.
            config = json.loads(raw.decode("utf-8") if hasattr(raw, "decode") else raw)
            if repair_keras2_config(config):
                h5file.attrs["model_config"] = json.dumps(config)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot repair the Keras 2 file: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def repair_keras2_config(config: Any) -> int:
    """Fix, in place, what Keras 3's legacy loader trips on in Keras 2 configs.

    DepthwiseConv layers lose the ``groups=1`` argument Keras 2 wrote; SeparableConv layers
    also lose the ``kernel_*`` arguments Keras 2 wrote beside its ``depthwise_*`` and
    ``pointwise_*`` ones (it ignored them; Keras 3 rejects them).

    References to nested models are renumbered: Keras 2 gives a nested model (a Sequential or
    Functional used as a layer) an inbound node of its own when it is built, so the first call
    of it is node 1; Keras 3 does not, and its legacy loader then fails with "The following
    nodes failed to be resolved".

    ``TFOpLambda`` layers kerasaudit rebuilds (arithmetic with a number or between two
    tensors, elementwise activations, …) become the Keras 3 layer that computes the same
    (:mod:`kerasaudit._keras2_ops`). Returns the number of changes.
    """
    from kerasaudit import _keras2_ops

    changed = 0
    # First: `inputs / 255.0`, `tf.nn.relu(x)`, `x + y` become Keras 3 layers, whose inbound
    # nodes then hold every tensor they take (a TFOpLambda's second one sat in its arguments)
    # and are renumbered below like any layer's.
    stack: list[Any] = [config]
    while stack:
        obj = stack.pop()
        if isinstance(obj, list):
            stack.extend(obj)
        elif isinstance(obj, dict):
            changed += _keras2_ops.rewrite(obj)
            stack.extend(v for v in obj.values() if isinstance(v, dict | list))
    stack = [config]
    while stack:
        obj = stack.pop()
        if isinstance(obj, list):
            stack.extend(obj)
            continue
        if not isinstance(obj, dict):
            continue
        cfg = obj.get("config")
        if (
            str(obj.get("class_name", "")).startswith("DepthwiseConv")
            and isinstance(cfg, dict)
            and cfg.get("groups") == 1
        ):
            # Keras 2 wrote a `groups` argument that Keras 3's DepthwiseConv rejects.
            del cfg["groups"]
            changed += 1
        if str(obj.get("class_name", "")).startswith("SeparableConv") and isinstance(cfg, dict):
            for key in ("kernel_initializer", "kernel_regularizer", "kernel_constraint"):
                if key in cfg:
                    del cfg[key]
                    changed += 1
            if cfg.get("groups") == 1:
                del cfg["groups"]
                changed += 1
        if obj.get("class_name") in ("Functional", "Model") and isinstance(cfg, dict):
            layers = [layer for layer in _list(cfg.get("layers")) if isinstance(layer, dict)]
            nested = {
                _layer_name(layer)
                for layer in layers
                if layer.get("class_name") in ("Sequential", "Functional", "Model")
            }
            refs = [
                ref
                for layer in layers
                for node in _list(layer.get("inbound_nodes"))
                for ref in _list(node)
            ]
            refs += _list(cfg.get("input_layers")) + _list(cfg.get("output_layers"))
            for ref in refs:
                if (
                    isinstance(ref, list)
                    and len(ref) >= 3
                    and isinstance(ref[0], str)
                    and ref[0] in nested
                    and isinstance(ref[1], int)
                    and ref[1] >= 1
                ):
                    ref[1] -= 1
                    changed += 1
        stack.extend(v for v in obj.values() if isinstance(v, dict | list))
    return changed


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _layer_name(layer: dict[str, Any]) -> Any:
    name = layer.get("name")
    config = layer.get("config")
    if name is None and isinstance(config, dict):
        name = config.get("name")
    return name if isinstance(name, str) else None
