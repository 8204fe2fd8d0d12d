"""Tables readable at 80 columns: identifiers fold onto the next line, never "expan…"."""

from __future__ import annotations

from typing import Any

from rich.table import Table as RichTable


class Table(RichTable):
    """A Rich table whose columns fold long cells (layer names, paths, headers) instead of
    cutting them with an ellipsis — the names shown are the ones options such as --layer
    take. Right-aligned (numeric) columns do not wrap, so a number is never split."""

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        if kwargs.get("justify") == "right":
            kwargs.setdefault("no_wrap", True)
        super().add_column(header, *args, **kwargs)
