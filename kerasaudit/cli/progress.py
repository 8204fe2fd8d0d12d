"""A progress bar on the stderr console, handed to the library as a plain callback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kerasaudit.cli.common import Consoles


@contextlib.contextmanager
def progress_bar(
    consoles: Consoles, description: str
) -> Iterator[Callable[[int, int | None], None]]:
    """Yield ``update(done, total)``; the bar is drawn on stderr, hidden by ``-q``, and removed
    when the block ends."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=consoles.err,
        transient=True,
        disable=consoles.quiet,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
