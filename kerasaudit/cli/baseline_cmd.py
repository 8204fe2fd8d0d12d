"""``kerasaudit baseline REPORT… -d D -o FILE``: a task baseline from known-clean models."""

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
from kerasaudit.cli.data_options import (
    DEFAULT_BATCH_SIZE,
    BatchSizeOpt,
    ChannelsFirstOpt,
    DataArgs,
    DataOpt,
    LimitOpt,
    ScaleOpt,
    XKeyOpt,
    YKeyOpt,
)
from kerasaudit.errors import BadInputError

MAX_IMAGES = 100_000  # read for the fingerprint at most (memory: 60,000 of 28×28 = 188 MB)


@handle_errors
def baseline(
    reports: Annotated[
        list[Path],
        typer.Argument(
            help="JSON reports (`reverse`/`audit`/`defend` -f json) of models known to be clean.",
            show_default=False,
        ),
    ],
    data: DataOpt,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The baseline file (.json, written atomically).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="The baseline's name (default: the file's stem).")
    ] = None,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a task baseline from the trigger-recovery reports of models you trust to be clean
    (run `kerasaudit reverse MODEL -d D -f json -o REPORT` on each; 3 at least, 10 or more is
    better) and the task's labelled data (--data, for the class-mean fingerprint). Use it with
    `reverse`/`audit`/`defend --baseline FILE`. Prints each label's usual offsets and a
    leave-one-out check: each clean model judged against a baseline of the others. Exit 0 when
    written."""
    from kerasaudit._io import check_output_path
    from kerasaudit.baselines import save
    from kerasaudit.data import open_data
    from kerasaudit.formats import baseline_fmt
    from kerasaudit.stages.baseline import build, read_report, task_of

    consoles = Consoles(quiet)
    require_paths(*(("report", p) for p in reports), ("--data", data))
    check_output_path(output, force=force)
    if len({p.resolve() for p in reports}) < len(reports):
        raise BadInputError("the same report is named twice: it would count twice")
    parsed = [read_report(p) for p in reports]
    num_classes, shape = task_of(parsed)
    if shape is None:
        raise BadInputError(
            "no report says the data's image shape: give reports written by `reverse`, `audit` "
            "or `defend` with -f json"
        )
    args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, False)
    dataset = open_data(args.spec_for(data), shape, num_classes)
    x, y = dataset.take_array(min(dataset.info.count, MAX_IMAGES))
    if y is None:
        raise BadInputError(f"--data {data} has no labels: the fingerprint is per class")
    result = build(parsed, x, y, name=name or output.stem, data_path=str(data))
    save(result.task, output, force=force)
    emit(
        fmt,
        lambda: baseline_fmt.to_json(result, str(output)),
        lambda console: baseline_fmt.render(result, console, str(output)),
        consoles,
        None,
        force,
    )
    consoles.info(baseline_fmt.summary_line(result, str(output)))
