"""Model loading: identify, check statically, then load with Keras in safe mode.

Order matters and is the point of this module:
1. the file is copied into a private temporary directory (so the bytes that were checked are
   the bytes that get loaded, whatever happens to the original meanwhile);
2. ``kerasaudit.safety`` reads its config without executing anything and refuses it unless
   ``--unsafe``;
3. only then is it handed to Keras, with ``safe_mode=True``, ``compile=False``, inside Keras'
   ``SafeModeScope`` (which also overrides a process-wide ``enable_unsafe_deserialization()``).
TF SavedModel directories are read with tf-keras (Keras 3 cannot rebuild layers from them), then
converted to Keras 3 through a legacy ``.h5`` that goes through the same checks again.
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

from kerasaudit import _tf
from kerasaudit.errors import BadInputError, UnsafeModelError
from kerasaudit.safety import ModelFormat, SafetyReport, check_model_file, detect_format


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
    fmt = detect_format(path)
    custom = load_custom_objects(custom_objects_file) if custom_objects_file else {}
    with _private_copy(path, fmt) as copy:
        report = check_model_file(copy, custom=custom)
        report = _relabel(report, path)
        if not report.safe and not unsafe:
            first = report.findings[0]
            more = len(report.findings) - 1
            reason = first.reason + (f" (and {more} more finding(s))" if more else "")
            raise UnsafeModelError(first.where, reason)
        if fmt is ModelFormat.SAVEDMODEL:
            model = _load_savedmodel(copy, custom, unsafe)
        else:
            if fmt is ModelFormat.H5 and (report.keras_version or "").startswith(("1.", "2.")):
                _repair_legacy_h5(copy)
            model = _load_keras(copy, custom, unsafe)
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


def _relabel(report: SafetyReport, original: Path) -> SafetyReport:
    from dataclasses import replace

    copy_name = Path(report.path).name
    findings = tuple(
        replace(f, where=f.where.replace(copy_name, original.name)) for f in report.findings
    )
    return replace(report, path=str(original), findings=findings)


@contextlib.contextmanager
def _private_copy(path: Path, fmt: ModelFormat) -> Iterator[Path]:
    tmpdir = Path(tempfile.mkdtemp(prefix="kerasaudit-model-"))
    try:
        if fmt is ModelFormat.SAVEDMODEL:
            target = tmpdir / "savedmodel"
            # symlinks=True copies links as links, so the safety check sees (and refuses) them.
            shutil.copytree(path, target, symlinks=True)
        else:
            target = tmpdir / f"model.{'keras' if fmt is ModelFormat.KERAS else 'h5'}"
            shutil.copyfile(path, target)
        yield target
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _load_keras(copy: Path, custom: dict[str, Any], unsafe: bool) -> Any:
    keras = _tf.keras()
    from keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(not unsafe), keras.saving.custom_object_scope(custom):
            return keras.saving.load_model(
                copy, custom_objects=custom, compile=False, safe_mode=not unsafe
            )
    except (MemoryError, RecursionError) as exc:
        raise BadInputError(
            f"Keras ran out of resources loading the model ({type(exc).__name__})"
        ) from exc
    except Exception as exc:
        raise BadInputError(f"Keras could not load the model: {_first_line(exc)}") from exc


def _load_savedmodel(copy: Path, custom: dict[str, Any], unsafe: bool) -> Any:
    _tf.tf()
    import tf_keras

    try:
        legacy = tf_keras.models.load_model(copy, custom_objects=custom, compile=False)
    except Exception as exc:
        raise BadInputError(f"tf-keras could not load the SavedModel: {_first_line(exc)}") from exc
    with tempfile.TemporaryDirectory(prefix="kerasaudit-sm-") as tmp:
        h5 = Path(tmp) / "converted.h5"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "HDF5 is legacy": we know, it is a bridge
                legacy.save(h5, save_format="h5", include_optimizer=False)
        except Exception as exc:
            raise BadInputError(
                f"the SavedModel loads in tf-keras but cannot be converted to Keras 3: "
                f"{_first_line(exc)}"
            ) from exc
        report = check_model_file(h5, custom=custom)
        if not report.safe and not unsafe:
            first = report.findings[0]
            raise UnsafeModelError(first.where, first.reason)
        _repair_legacy_h5(h5)
        return _load_keras(h5, custom, unsafe)


def _repair_legacy_h5(copy: Path) -> None:
    """Fix Keras 2 quirks Keras 3's legacy loader trips on, in our private copy only."""
    import json

    import h5py

    with h5py.File(copy, "r+") as h5file:
        raw = h5file.attrs["model_config"]
        config = json.loads(raw.decode("utf-8") if hasattr(raw, "decode") else raw)
        if repair_keras2_config(config):
            h5file.attrs["model_config"] = json.dumps(config)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def repair_keras2_config(config: Any) -> int:
    """Fix, in place, what Keras 3's legacy loader trips on in Keras 2 configs.

    DepthwiseConv layers lose the ``groups=1`` argument Keras 2 wrote.

    References to nested models are renumbered: Keras 2 gives a nested model (a Sequential or
    Functional used as a layer) an inbound node of its own when it is built, so the first call
    of it is node 1; Keras 3 does not, and its legacy loader then fails with "The following
    nodes failed to be resolved". Returns the number of changes.
    """
    changed = 0
    stack: list[Any] = [config]
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
        if obj.get("class_name") in ("Functional", "Model") and isinstance(cfg, dict):
            nested = {
                layer["config"]["name"] if "name" not in layer else layer["name"]
                for layer in cfg.get("layers", [])
                if isinstance(layer, dict)
                and layer.get("class_name") in ("Sequential", "Functional", "Model")
            }
            for layer in cfg.get("layers", []):
                for node in layer.get("inbound_nodes", []) if isinstance(layer, dict) else []:
                    for ref in node if isinstance(node, list) else []:
                        if (
                            isinstance(ref, list)
                            and len(ref) >= 3
                            and ref[0] in nested
                            and isinstance(ref[1], int)
                            and ref[1] >= 1
                        ):
                            ref[1] -= 1
                            changed += 1
            for key in ("input_layers", "output_layers"):
                for ref in cfg.get(key, []) or []:
                    if isinstance(ref, list) and len(ref) >= 3 and ref[0] in nested and ref[1] >= 1:
                        ref[1] -= 1
                        changed += 1
        stack.extend(v for v in obj.values() if isinstance(v, dict | list))
    return changed
