"""A connection to a Ray cluster for ``batch --ray`` and ``scan --ray`` (Ray is an optional
extra: ``pip install 'kerasaudit[ray]'``)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from kerasaudit.errors import BadInputError


@contextlib.contextmanager
def ray_session(address: str, *, needs: tuple[str, ...] = ("ray",)) -> Iterator[Any]:
    """Import ``needs`` (e.g. ``ray.data``), connect to ``address`` (``auto``, ``host:port``,
    ``ray://host:10001`` or ``local``) and yield the ``ray`` module; shut down on the way out.
    A missing package or an unreachable cluster is bad input (one line, exit 2)."""
    try:
        for name in needs:
            importlib.import_module(name)
        import ray
    except ImportError as exc:
        raise BadInputError(
            f"--ray needs Ray: pip install 'kerasaudit[ray]' ({exc.name} is missing)"
        ) from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"--ray {address}: cannot connect ({exc})") from exc
    try:
        yield ray
    finally:
        ray.shutdown()
