"""The one place TensorFlow and Keras are imported (lazily, on first use).

Keeping these imports out of module level is what makes ``kerasaudit --help`` instant;
ruff's banned-module-level-imports rule holds that line for the rest of the package.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

_imported = False


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ runtime logs to fd 2 while it starts (absl "InitializeLog", CUDA probes),
    ignoring TF_CPP_MIN_LOG_LEVEL for some messages. Our stderr is for the user, so those lines
    are dropped during start-up only. KERASAUDIT_DEBUG=1 keeps them."""
    if os.environ.get("KERASAUDIT_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured by a test runner)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_environment() -> None:
    # Must be set before TensorFlow is imported; users can still override them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"))


def tf() -> ModuleType:
    global _imported
    _quiet_environment()
    if not _imported:
        with _native_stderr_silenced():
            import tensorflow

            tensorflow.get_logger().setLevel("ERROR")
            tensorflow.config.list_physical_devices("GPU")  # triggers the CUDA probe now
            import keras  # noqa: F401  (its import initialises a second absl logger)
        _imported = True
    import tensorflow

    return tensorflow


def check_keras_version(version: str) -> None:
    """The safety allowlist was generated from one Keras release; another minor release may
    add layers (refused for no reason) or change what a config can make Keras do (admitted
    without review). Exit 2 with a clear message instead of auditing with a stale list."""
    from kerasaudit._allowlist import GENERATED_FROM_KERAS
    from kerasaudit.errors import BadInputError

    def minor(text: str) -> tuple[str, ...]:
        return tuple(text.split(".")[:2])

    if minor(version) != minor(GENERATED_FROM_KERAS):
        wanted = ".".join(minor(GENERATED_FROM_KERAS))
        raise BadInputError(
            f"Keras {version} is installed, but kerasaudit's safety allowlist was generated "
            f"from Keras {GENERATED_FROM_KERAS}: install keras=={wanted}.* (pip install -e . "
            "does), or regenerate the list with scripts/gen_allowlist.py"
        )


def keras() -> ModuleType:
    tf()
    import keras as _keras

    check_keras_version(_keras.__version__)

    if _keras.backend.backend() != "tensorflow":
        from kerasaudit.errors import BadInputError

        raise BadInputError(
            f"kerasaudit needs the TensorFlow Keras backend, KERAS_BACKEND is "
            f"{_keras.backend.backend()!r}"
        )
    return _keras


def configure_device(device: str = "auto") -> Any:
    """Pick ``auto`` (GPU when present), ``cpu`` or ``gpu``; return a tf.distribute strategy."""
    from kerasaudit.errors import BadInputError

    t = tf()
    gpus = t.config.list_physical_devices("GPU")
    if device == "cpu":
        # RuntimeError: devices already initialised; the strategy still pins work to the CPU.
        with contextlib.suppress(RuntimeError):
            t.config.set_visible_devices([], "GPU")
        return t.distribute.OneDeviceStrategy("/cpu:0")
    if device == "gpu" and not gpus:
        raise BadInputError("--device gpu was asked for, but TensorFlow sees no GPU")
    with_gpus = gpus
    if len(with_gpus) > 1:
        return t.distribute.MirroredStrategy()
    if len(with_gpus) == 1:
        return t.distribute.OneDeviceStrategy("/gpu:0")
    return t.distribute.OneDeviceStrategy("/cpu:0")
