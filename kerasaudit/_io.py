"""Output files: checked before any work starts, written atomically only after success."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from kerasaudit.errors import BadInputError


def check_output_path(path: Path, *, force: bool) -> None:
    """Fail early (before any expensive work) if ``path`` cannot be written."""
    if path.exists() and not force:
        raise BadInputError(f"{path} exists; pass --force to overwrite it")
    if path.exists() and path.is_dir() and not path.suffix == "":
        raise BadInputError(f"{path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"directory {parent} is not writable")


@contextlib.contextmanager
def atomic_path(path: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Works for files and for directories written by a callee (e.g. an image folder).
    A failed run leaves neither a partial file nor a truncated existing one.
    """
    check_output_path(path, force=force)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmpdir / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_text_atomic(path: Path, text: str, *, force: bool) -> None:
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_atomic(path: Path, writer: Callable[[Path], None], *, force: bool) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, force=force) as tmp:
        writer(tmp)
