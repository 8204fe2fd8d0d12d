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
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            "--reference",
            help="A clean model of the task (.keras/.h5; repeatable), copied beside the file: "
            "the mask and warp signals then do not flag a label whose recovered trigger also "
            "moves these models (a feature of the class, not a backdoor).",
            show_default=False,
        ),
    ] = None,
    transfer: Annotated[
        float,
        typer.Option(
            "--transfer",
            help="With --reference: the share of the references' images a label's trigger "
            "must send to it for the veto (the shipped Fashion-MNIST baseline's).",
            min=0.01,
            max=1.0,
        ),
    ] = 0.2,
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
    from kerasaudit.stages.baseline import (
        build,
        check_references,
        copy_references,
        read_report,
        task_of,
    )

    consoles = Consoles(quiet)
    references = list(reference or [])
    require_paths(
        *(("report", p) for p in reports),
        ("--data", data),
        *(("--reference", p) for p in references),
    )
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
    copies = check_references(references, output, num_classes, shape, force=force)
    args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, False)
    dataset = open_data(args.spec_for(data), shape, num_classes)
    x, y = dataset.take_array(min(dataset.info.count, MAX_IMAGES))
    if y is None:
        raise BadInputError(f"--data {data} has no labels: the fingerprint is per class")
    result = build(
        parsed,
        x,
        y,
        name=name or output.stem,
        data_path=str(data),
        references=copies,
        transfer=transfer,
    )
    copy_references(references, copies, force=force)
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
