"""kerasaudit: audit saved Keras models for backdoors and prune them out.

The Python API (``kerasaudit.api``; the CLI runs the same functions)::

    import kerasaudit as ka

    model = ka.load_model("model.keras")          # static checks + sandboxed load
    result = ka.audit(model, "clean.npz")         # result.backdoor, result.targets
    fixed, report = ka.defend(model, "clean.npz")

Importing this package is cheap: the API is imported on first use, and TensorFlow and Keras
only inside the functions that need them (see ``kerasaudit._tf``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kerasaudit.api import (
        audit,
        build_baseline,
        defend,
        evaluate,
        gradcam,
        inspect,
        load_data,
        load_model,
        make_trigger,
        prune,
        reverse,
        save_baseline,
        save_model,
        scan,
        sweep,
    )

__all__ = [
    "__version__",
    "audit",
    "build_baseline",
    "defend",
    "evaluate",
    "gradcam",
    "inspect",
    "load_data",
    "load_model",
    "make_trigger",
    "prune",
    "reverse",
    "save_baseline",
    "save_model",
    "scan",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kerasaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'kerasaudit' has no attribute {name!r}")
