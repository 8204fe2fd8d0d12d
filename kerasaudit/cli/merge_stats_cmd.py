"""``kerasaudit merge-stats A B … -o ALL``: combine the statistics of scan shards into one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kerasaudit.cli.common import (
    Consoles,
    ForceOpt,
    FormatOpt,
    OutputFormat,
    QuietOpt,
    emit,
    handle_errors,
)
from kerasaudit.cli.context import require_paths
from kerasaudit.errors import BadInputError


@handle_errors
def merge_stats(
    shards: Annotated[
        list[Path],
        typer.Argument(
            help="Statistics files written by `scan --save-stats` (e.g. one per --shard).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The merged statistics file (.npz, written atomically).",
            show_default=False,
        ),
    ],
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Merge the statistics of several scans of one model (shards of a data set) into the
    statistics of one scan over all of them: sums add, maxima take the maximum, so the merged
    file scores and flags channels as an unsharded scan would. Prints the merged scan's table.
    Exit 0 when merged (the flags are leads, as in `scan`); 2 when the files do not belong
    together (different models, layers or precision)."""
    from kerasaudit._io import check_output_path
    from kerasaudit.formats import scan_fmt
    from kerasaudit.stages.scan import analyse, load_stats, merge, save_stats

    consoles = Consoles(quiet)
    if len(shards) < 2:
        raise BadInputError("merge-stats needs at least two statistics files")
    require_paths(*(("statistics file", p) for p in shards))
    check_output_path(output, force=force)
    resolved = {p.resolve() for p in shards}
    if len(resolved) < len(shards):
        raise BadInputError("the same statistics file is named twice: it would count twice")
    if output.resolve() in resolved:
        raise BadInputError(f"--output {output} is one of the inputs")
    merged = load_stats(shards[0])
    for path in shards[1:]:
        merged = merge(merged, load_stats(path))
    save_stats(merged, output, force=force)
    result = analyse(merged)
    label = f"{merged.model_name} (merged statistics)"
    emit(
        fmt,
        lambda: scan_fmt.to_json(result, model_path=label, stats_file=str(output)),
        lambda console: scan_fmt.render(result, console, model_path=label, stats_file=str(output)),
        consoles,
        None,
        force,
    )
    consoles.info(
        f"merged {len(shards)} files: {merged.images:,} images, {len(merged.layers)} layers, "
        f"{result.channel_count:,} channels, {result.flagged_count:,} flagged on clean data; "
        f"wrote {output}"
    )
